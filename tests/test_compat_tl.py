"""compat.tl: which TransformerLens is installed, told by behaviour, and what each version refuses.

Runs on TransformerLens 3.9 and 4.x alike: each test states what must hold on the installed one.
"""

import tempfile

import pytest
import torch

import tl_interp as ti
from tl_interp import compat
from tl_interp.errors import ModelLoadError, UnsupportedError


def _import_hooked_works() -> bool:
    try:
        from transformer_lens import HookedTransformer  # noqa: F401
    except ImportError:
        return False
    return True


def test_has_hooked_transformer_is_whether_the_import_works() -> None:
    assert compat.has_hooked_transformer() is _import_hooked_works()
    assert (compat.tl.hooked_reason() is None) is compat.has_hooked_transformer()


def test_require_hooked_names_transformer_lens_4_and_the_way_out_where_it_is_missing() -> None:
    if compat.has_hooked_transformer():
        assert compat.require_hooked("a test").__name__ == "HookedTransformer"
        return
    with pytest.raises(UnsupportedError, match=r"a test needs TransformerLens's HookedTransformer, which "
                                               r"TransformerLens 4 removed .*TransformerBridge.*constraints.txt"):
        compat.require_hooked("a test")


def test_sae_features_raise_one_error_naming_the_reason_on_transformer_lens_4() -> None:
    if compat.has_hooked_transformer():
        pytest.importorskip("sae_lens")
        assert compat.sae_lens_reason() is None
        compat.require_sae("a test")  # nothing to refuse
        return
    reason = "needs sae-lens: sae-lens requires TransformerLens < 4"
    for call in (lambda: ti.models.load_sae("ordinal-4l-res-l2"), lambda: ti.hooks.sae_splice(object()),
                 lambda: ti.viz.feature_card(None, object(), ["one"], 0),
                 lambda: ti.steering.decompose(ti.steering.SteeringVector(torch.ones(8), "blocks.0.hook_resid_pre",
                                                                          name="v"), object())):
        with pytest.raises(UnsupportedError, match=reason):
            call()


def test_models_load_gives_the_model_class_the_installed_transformer_lens_has() -> None:
    model = ti.models.load("induction-2l")
    assert compat.is_hooked_transformer(model) is compat.has_hooked_transformer()
    assert compat.is_bridge(model) is not compat.has_hooked_transformer()
    assert model.cfg.n_layers == 2 and model.card["evaluation"]["induction_head"][0] == 1


def test_a_directory_asked_for_as_hooked_on_transformer_lens_4_is_refused_with_the_fix() -> None:
    path = ti.models.make_tiny_hf_dir(tempfile.mkdtemp(), "llama")
    if compat.has_hooked_transformer():
        assert compat.is_hooked_transformer(ti.models.load(path, backend="hooked", device="cpu"))
        return
    with pytest.raises(ModelLoadError, match=r"backend='hooked' cannot load .*HookedTransformer.*use backend='bridge'"):
        ti.models.load(path, backend="hooked", device="cpu")
    assert compat.is_bridge(ti.models.load(path, device="cpu"))  # auto: the bridge


def test_a_native_bridge_refuses_what_the_checkpoint_converter_does_not_cover() -> None:
    fields = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=5, n_ctx=8, act_fn="relu",
                  positional_embedding_type="rotary")
    assert "learned positions only" in compat.tl.native_reason(fields)
    assert "n_key_value_heads" in compat.tl.native_reason({**fields, "positional_embedding_type": "standard",
                                                           "n_key_value_heads": 1})
    with pytest.raises(ModelLoadError, match="can't build a TransformerBridge from its checkpoint"):
        compat.tl.native_bridge(fields, {}, name="rotary toy")


def test_a_model_built_from_fields_holds_exactly_the_given_weights() -> None:
    fields = dict(n_layers=1, d_model=8, n_heads=2, d_head=4, d_vocab=5, n_ctx=8, act_fn="relu", attn_only=True,
                  normalization_type=None, positional_embedding_type="standard", default_prepend_bos=False)
    g = torch.Generator().manual_seed(0)
    weights = {"embed.W_E": torch.randn(5, 8, generator=g), "pos_embed.W_pos": torch.randn(8, 8, generator=g),
               "blocks.0.attn.W_Q": torch.randn(2, 8, 4, generator=g), "blocks.0.attn.W_K": torch.randn(2, 8, 4, generator=g),
               "blocks.0.attn.W_V": torch.randn(2, 8, 4, generator=g), "blocks.0.attn.W_O": torch.randn(2, 4, 8, generator=g),
               "blocks.0.attn.b_Q": torch.randn(2, 4, generator=g), "blocks.0.attn.b_K": torch.randn(2, 4, generator=g),
               "blocks.0.attn.b_V": torch.randn(2, 4, generator=g), "blocks.0.attn.b_O": torch.randn(8, generator=g),
               "unembed.W_U": torch.randn(8, 5, generator=g), "unembed.b_U": torch.randn(5, generator=g)}
    model = compat.tl.build_from_fields(fields, weights, name="toy")
    tokens = torch.tensor([[0, 3, 1, 4]])
    # the reference: the same one-layer attention-only transformer written out by hand
    x = weights["embed.W_E"][tokens] + weights["pos_embed.W_pos"][:4]
    q = torch.einsum("bpd,hde->bphe", x, weights["blocks.0.attn.W_Q"]) + weights["blocks.0.attn.b_Q"]
    k = torch.einsum("bpd,hde->bphe", x, weights["blocks.0.attn.W_K"]) + weights["blocks.0.attn.b_K"]
    v = torch.einsum("bpd,hde->bphe", x, weights["blocks.0.attn.W_V"]) + weights["blocks.0.attn.b_V"]
    scores = torch.einsum("bqhe,bkhe->bhqk", q, k) / 2.0
    scores = scores.masked_fill(torch.triu(torch.ones(4, 4, dtype=torch.bool), 1), float("-inf"))
    z = torch.einsum("bhqk,bkhe->bqhe", scores.softmax(-1), v)
    x = x + torch.einsum("bqhe,hed->bqd", z, weights["blocks.0.attn.W_O"]) + weights["blocks.0.attn.b_O"]
    expected = x @ weights["unembed.W_U"] + weights["unembed.b_U"]
    torch.testing.assert_close(model(tokens), expected, rtol=1e-5, atol=1e-5)  # float32 rounding of logits ~20
