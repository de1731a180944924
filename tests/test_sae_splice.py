"""sae_splice against sae-lens's own HookedSAETransformer, on HookedTransformer and HookedSAETransformer."""

import functools
from typing import Any

import pytest
import torch
from sae_lens import HookedSAETransformer, StandardSAE, StandardSAEConfig, TopKSAE, TopKSAEConfig
from sae_lens.saes.sae import SAEMetadata
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import _cfg, no_hooks_attached
from tests.reliability import no_forward, ordinal, tl_run
from tl_interp import ShapeError, hooks, site
from tl_interp.errors import InputError
from tl_interp.positions import From

HOOK = site("resid_post", 0)


def make_sae(kind: str = "standard", d_in: int = 32, d_sae: int = 96, hook: str = HOOK) -> Any:
    torch.manual_seed(0)
    meta = SAEMetadata(hook_name=hook, model_name="test")
    if kind == "topk":
        sae = TopKSAE(TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=8, metadata=meta))
    else:
        sae = StandardSAE(StandardSAEConfig(d_in=d_in, d_sae=d_sae, metadata=meta))
        with torch.no_grad():
            sae.b_enc.normal_(0.0, 0.1)
            sae.b_dec.normal_(0.0, 0.1)
    return sae.eval()


@pytest.fixture(scope="module")
def model() -> Any:
    return HookedSAETransformer(_cfg()).eval()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(1, 61, (3, 7), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("kind", ["standard", "topk"])
def test_empty_edit_with_error_term_reproduces_the_model(model: Any, tokens: torch.Tensor, kind: str) -> None:
    sae = make_sae(kind)
    assert torch.equal(hooks.sae_splice(sae, positions="all").run(model, tokens), model(tokens))
    # an identity edit goes through encode, decode and the error term: x + (dec(f) - dec(f)) is x exactly
    identity = hooks.sae_splice(sae, lambda features: features, positions="all")
    assert torch.equal(identity.run(model, tokens), model(tokens))
    # the error term also cancels for an edit that changes nothing
    assert_close(hooks.sae_splice(sae, hooks.scale_features([0, 1], 1.0)).run(model, tokens), model(tokens),
                 rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("kind", ["standard", "topk"])
def test_without_error_term_matches_run_with_saes(model: Any, tokens: torch.Tensor, kind: str) -> None:
    sae = make_sae(kind)
    theirs = model.run_with_saes(tokens, saes=[sae], use_error_term=False)
    ours = hooks.sae_splice(sae, keep_error=False).run(model, tokens)
    assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert not torch.allclose(ours, model(tokens), atol=1e-3)  # the SAE is lossy: the test can fail
    assert no_hooks_attached(model)


def test_feature_ablation_with_error_term_matches_sae_lens(model: Any, tokens: torch.Tensor) -> None:
    sae = make_sae()
    ablate = [2, 5, 11, 40]

    def zero(acts: torch.Tensor, hook: Any) -> torch.Tensor:
        acts = acts.clone()
        acts[..., ablate] = 0
        return acts

    sae.use_error_term = True
    try:
        theirs = model.run_with_hooks_with_saes(tokens, saes=[sae], fwd_hooks=[(f"{HOOK}.hook_sae_acts_post", zero)])
    finally:
        sae.use_error_term = False
    ours = hooks.sae_splice(sae, hooks.ablate_features(ablate)).run(model, tokens)
    assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(ours, model(tokens), atol=1e-4)


def test_splice_works_on_a_plain_hooked_transformer(tokens: torch.Tensor) -> None:
    from transformer_lens import HookedTransformer

    plain, sae_model = HookedTransformer(_cfg()).eval(), HookedSAETransformer(_cfg()).eval()
    sae = make_sae()
    assert_close(hooks.sae_splice(sae, keep_error=False).run(plain, tokens),
                 sae_model.run_with_saes(tokens, saes=[sae], use_error_term=False), rtol=0, atol=1e-6)


def test_feature_edits_compose_and_print(model: Any, tokens: torch.Tensor) -> None:
    sae = make_sae()
    edit = hooks.clamp_features(3, 4.0) + hooks.scale_features([1], 0.5)
    after = hooks.cache(HOOK)
    (hooks.sae_splice(sae, edit, keep_error=False) + after).run(model, tokens)
    clean = hooks.cache(HOOK).collect(model, tokens)[HOOK]
    features = sae.encode(clean)
    features[..., 3] = 4.0
    features[..., 1] *= 0.5
    assert_close(after[HOOK], sae.decode(features), rtol=0, atol=1e-6)
    assert "clamp features [3] to 4, then scale features [1] by 0.5" in str(hooks.sae_splice(sae, edit))


def test_splice_only_at_selected_positions(model: Any, tokens: torch.Tensor) -> None:
    sae = make_sae()
    after = hooks.cache(HOOK)
    (hooks.sae_splice(sae, keep_error=False, positions=-1) + after).run(model, tokens)
    clean = hooks.cache(HOOK).collect(model, tokens)[HOOK]
    assert torch.equal(after[HOOK][:, :-1], clean[:, :-1])
    assert_close(after[HOOK][:, -1], sae.decode(sae.encode(clean[:, -1])), rtol=0, atol=1e-6)


def test_zero_feature_vector_changes_nothing(model: Any, tokens: torch.Tensor) -> None:
    sae = make_sae()
    out = hooks.sae_splice(sae, hooks.add_features(torch.zeros(96), 10.0)).run(model, tokens)
    assert_close(out, model(tokens), rtol=1e-6, atol=1e-5)


def test_an_sae_of_the_wrong_width_fails_before_running(model: Any, tokens: torch.Tensor) -> None:
    with pytest.raises(ShapeError, match=r"sae_splice at blocks.0.hook_resid_post: the SAE input has 48 entries, the site has d_model=32"):
        hooks.sae_splice(make_sae(d_in=48)).run(model, tokens)
    assert no_hooks_attached(model)


# -- issue 10's reliability probes (formerly tests/test_reliability_steering.py), beside the module they test --
SITE = site("resid_pre", 2)
PROMPTS = ["one , two ,", "january , february , march ,"]


@functools.cache
def sae() -> Any:
    return ti.models.load_sae("ordinal-4l-res-l2")


def test_an_sae_spliced_at_a_site_it_was_not_trained_at_is_refused() -> None:
    # own probe for item 7: hooks.sae_splice(sae, where=another site of the same width)
    with pytest.raises(InputError, match="trained at blocks.2.hook_resid_pre; at blocks.1.hook_resid_pre its features"):
        hooks.sae_splice(sae(), where=site("resid_pre", 1))
    with pytest.raises(InputError, match="at blocks.0.attn.hook_z"):
        hooks.sae_splice(sae(), where=site("z", 0))


# -- issue item 12: the SAE card's splice positions ----------------------------------------
def test_sae_splice_uses_the_cards_positions_by_default_and_says_so() -> None:
    # probe 12: "hooks.sae_splice(sae) splices at every position although ... trained on positions 2:"
    iv = hooks.sae_splice(sae(), keep_error=False)
    assert "positions From(1) from the SAE's card" in str(iv)
    model = ordinal()
    tokens = model.to_tokens(PROMPTS[1])

    def reconstruct_from_1(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[:, 1:] = sae().decode(sae().encode(a[:, 1:]))
        return out

    expected = tl_run(model, tokens, [(SITE, reconstruct_from_1)])
    assert_close(iv.run(model, tokens), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(hooks.sae_splice(sae(), keep_error=False, positions=From(1)).run(model, tokens),
                       iv.run(model, tokens))  # the card's default is exactly From(1)


def test_positions_all_overrides_the_card() -> None:
    # probe 12, correct behaviour: every real token when asked
    model = ordinal()
    tokens = model.to_tokens(PROMPTS[1])
    expected = tl_run(model, tokens, [(SITE, lambda a, hook: sae().decode(sae().encode(a)))])
    got = hooks.sae_splice(sae(), keep_error=False, positions="all").run(model, tokens)
    assert "from the SAE's card" not in str(hooks.sae_splice(sae(), positions="all"))
    assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_an_empty_splice_with_the_error_kept_leaves_the_model_bit_identical() -> None:
    model = ordinal()
    tokens = model.to_tokens(PROMPTS[1])
    assert torch.equal(hooks.sae_splice(sae()).run(model, tokens), model(tokens))


@pytest.mark.real_model
def test_the_smollm2_sae_splice_loss_follows_its_card() -> None:
    # probe 12 on the real model: reconstruction-only loss 6.06 at every position vs 4.46 on the card's
    model = ti.models.load("smollm2-135m")
    big = ti.models.load_sae("smollm2-135m-res-l15")
    tokens = model.to_tokens("<|im_start|>The quick brown fox jumps over the lazy dog, and then it runs far away.",
                             prepend_bos=False)
    metric = ti.metrics.loss(tokens)
    default = metric(hooks.sae_splice(big, keep_error=False).run(model, tokens))
    card = metric(hooks.sae_splice(big, keep_error=False, positions=From(2)).run(model, tokens))
    everywhere = metric(hooks.sae_splice(big, keep_error=False, positions="all").run(model, tokens))
    assert_close(default, card, rtol=0, atol=0)
    assert float(everywhere) > float(default)


# -- unclear errors: SAE edits ------------------------------------------------------------------
@pytest.mark.parametrize("edit, error, message", [
    (lambda f: f[..., :10], ShapeError, r"must return features of the shape it gets .* returned \(1, 2, 10\)"),
    (lambda f: None, ShapeError, "returned NoneType"),  # own probe
    (lambda f: f @ torch.ones(3, 3), ShapeError, "the feature edit failed on features of shape"),  # own probe
    (hooks.clamp_features(5000, 1.0), ti.SelectionError, r"feature index out of range for d_sae=1024: \[5000\]"),
    (hooks.add_features(torch.ones(10)), ShapeError, "the feature-space vector has 10 entries, the SAE has d_sae=1024"),
])
def test_a_feature_edit_that_cannot_apply_is_refused_before_any_forward_pass(edit: Any, error: type,
                                                                              message: str) -> None:
    # unclear error: "an SAE edit returning the wrong shape"
    model = ordinal()
    with no_forward(model), pytest.raises(error, match=message):
        hooks.sae_splice(sae(), edit).run(model, model.to_tokens(PROMPTS[0]))
