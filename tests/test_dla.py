"""Direct logit attribution sums to the model's own logit and equals TransformerLens's cache helpers.

References: the model's logits (the sum), ``ActivationCache.logit_attrs`` of ``decompose_resid``,
``stack_head_results`` and ``stack_neuron_results`` (the components), ``compat.head`` on
``resid - component`` (the renormalised effects), and the induction circuit of induction-2l.
"""

from pathlib import Path

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tl_interp import compat
from tl_interp.errors import InputError, OptionError, SelectionError, UnsupportedError
from tl_interp.lens import DLAResult

from .conftest import attn_only, gpt2_style, llama_style


def _perturbed(model):
    """Random final-norm weight / bias and unembedding bias, so the constant and gain paths count."""
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        if hasattr(model.ln_final, "w"):
            model.ln_final.w.copy_(1 + 0.3 * torch.randn(model.ln_final.w.shape, generator=gen))
        if hasattr(model.ln_final, "b"):
            model.ln_final.b.copy_(0.3 * torch.randn(model.ln_final.b.shape, generator=gen))
        model.unembed.b_U.copy_(0.3 * torch.randn(model.unembed.b_U.shape, generator=gen))
    return model


MODELS = {"induction-2l": lambda: ti.models.load("induction-2l"), "ordinal-4l": lambda: ti.models.load("ordinal-4l"),
          "llama-style": lambda: _perturbed(llama_style()), "gpt2-style": lambda: _perturbed(gpt2_style()),
          "attn-only": attn_only}


@pytest.fixture(scope="module", params=list(MODELS))
def model(request):
    return MODELS[request.param]()


def _tokens(model, n: int = 3, width: int = 8):
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, model.cfg.d_vocab, (n, width), generator=gen)
    mask = torch.ones_like(tokens)
    mask[1, -2:] = 0
    return tokens * mask, mask


@pytest.mark.parametrize("by", ["layer", "component", "head", "neuron", "position"])
def test_components_plus_constant_sum_to_the_models_logit_difference(model, by: str) -> None:
    if by == "neuron" and model.cfg.attn_only:
        pytest.skip("attention-only")
    tokens, mask = _tokens(model)
    dla = ti.lens.direct_logit_attribution(model, tokens, torch.tensor([3, 4, 5]), against=7, by=by,
                                           attention_mask=mask, progress=False)
    logits = model(tokens, attention_mask=mask)
    last = mask.sum(1) - 1
    rows = torch.arange(3)
    want = logits[rows, last, torch.tensor([3, 4, 5])] - logits[rows, last, 7]
    assert_close(dla.total, want, atol=1e-4, rtol=1e-5)
    assert_close(dla.extras["logit"], want, atol=1e-4, rtol=1e-5)


def _folded_ordinal():
    """ordinal-4l with its LayerNorms folded (TL's own processing): TL's helpers assume it."""
    model = ti.models.load("ordinal-4l")
    model.process_weights_(fold_ln=True, center_writing_weights=False, center_unembed=False)
    return model


def test_by_component_equals_transformer_lens_logit_attrs_of_decompose_resid() -> None:
    for model in (gpt2_style(), llama_style(), _folded_ordinal()):
        tokens = torch.randint(1, model.cfg.d_vocab, (2, 6), generator=torch.Generator().manual_seed(1))
        dla = ti.lens.direct_logit_attribution(model, tokens, torch.tensor([2, 3]), against=torch.tensor([4, 5]),
                                               by="component", progress=False)
        _, cache = model.run_with_cache(tokens)
        stack, labels = cache.decompose_resid(layer=None, pos_slice=-1, return_labels=True)
        tl = cache.logit_attrs(stack, torch.tensor([2, 3]), incorrect_tokens=torch.tensor([4, 5]), pos_slice=-1)
        assert list(dla.labels["component"]) == labels
        assert_close(dla.values, tl, atol=1e-5, rtol=1e-5)


@pytest.mark.hooked  # folds with HookedTransformer.process_weights_
def test_an_unfolded_layernorm_gives_the_same_attribution_as_its_folded_copy() -> None:
    # TL's logit_attrs ignores ln_final's weight and bias (it assumes them folded into W_U); we
    # read them, so folding changes nothing but the float rounding.
    tokens = torch.randint(1, 89, (2, 6), generator=torch.Generator().manual_seed(1))
    plain = ti.lens.direct_logit_attribution(ti.models.load("ordinal-4l"), tokens, 2, against=4, by="component",
                                             progress=False)
    folded = ti.lens.direct_logit_attribution(_folded_ordinal(), tokens, 2, against=4, by="component", progress=False)
    assert_close(plain.values, folded.values, atol=1e-4, rtol=1e-4)
    assert_close(plain.extras["logit"], folded.extras["logit"], atol=1e-4, rtol=1e-4)


def test_by_head_and_by_neuron_equal_transformer_lens_stacks() -> None:
    model = llama_style()
    tokens = torch.randint(1, model.cfg.d_vocab, (2, 6), generator=torch.Generator().manual_seed(2))
    answers = torch.tensor([2, 3])
    _, cache = model.run_with_cache(tokens)
    heads = ti.lens.direct_logit_attribution(model, tokens, answers, by="head", progress=False)
    stack, labels = cache.stack_head_results(layer=-1, pos_slice=-1, return_labels=True)
    n = model.cfg.n_layers * model.cfg.n_heads
    assert list(heads.labels["component"][:n]) == labels
    assert_close(heads.values[:n], cache.logit_attrs(stack, answers, pos_slice=-1), atol=1e-5, rtol=1e-5)
    assert_close(heads.heads().reshape(n, -1), heads.values[:n])
    neurons = ti.lens.direct_logit_attribution(model, tokens, answers, by="neuron", progress=False)
    stack, labels = cache.stack_neuron_results(layer=model.cfg.n_layers, pos_slice=-1, return_labels=True)
    m = model.cfg.n_layers * model.cfg.d_mlp
    assert list(neurons.labels["component"][:m]) == labels
    assert_close(neurons.values[:m], cache.logit_attrs(stack, answers, pos_slice=-1), atol=1e-5, rtol=1e-5)


def test_renormalised_effects_recompute_the_final_norm_without_each_component() -> None:
    model = _perturbed(gpt2_style())
    tokens = torch.randint(1, model.cfg.d_vocab, (2, 6), generator=torch.Generator().manual_seed(4))
    dla = ti.lens.direct_logit_attribution(model, tokens, 3, by="component", progress=False)
    _, cache = model.run_with_cache(tokens)
    stack = cache.decompose_resid(layer=None, pos_slice=-1)  # (component, batch, d_model)
    resid = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"][:, -1]
    full = compat.head(model, resid)[:, 3]
    without = torch.stack([compat.head(model, resid - c)[:, 3] for c in stack])
    assert_close(dla.extras["renormalised"], full - without, atol=1e-4, rtol=1e-4)
    assert dla.approximation()["max_abs_centring"] > 0  # LayerNorm centres; RMSNorm would not


def test_by_neuron_renormalised_effects_match_the_vector_computation() -> None:
    model = llama_style()
    tokens = torch.randint(1, model.cfg.d_vocab, (1, 5), generator=torch.Generator().manual_seed(5))
    dla = ti.lens.direct_logit_attribution(model, tokens, 6, by="neuron", progress=False)
    _, cache = model.run_with_cache(tokens)
    stack = cache.stack_neuron_results(layer=model.cfg.n_layers, pos_slice=-1)[:, 0]
    resid = cache[f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"][0, -1]
    full = compat.head(model, resid[None])[0, 6]
    without = compat.head(model, resid[None] - stack)[:, 6]
    m = stack.shape[0]
    assert_close(dla.extras["renormalised"][:m, 0], full - without, atol=1e-4, rtol=1e-4)


def _repeated(seed: int = 0, half: int = 10) -> torch.Tensor:
    seq = torch.randint(2, 60, (4, half), generator=torch.Generator().manual_seed(seed))
    return torch.cat([seq, seq], 1)


def test_on_induction_2l_the_induction_head_dominates_the_repeated_half() -> None:
    model = ti.models.load("induction-2l")
    tokens = _repeated()
    wins = 0
    for pos in range(11, 19):  # the second half, predicting the repeated next token
        dla = ti.lens.direct_logit_attribution(model, tokens, tokens[:, pos + 1], by="head",
                                               positions=pos, progress=False)
        heads = dla.heads().mean(-1)  # (layer, head)
        wins += int(heads.flatten().argmax()) == model.cfg.n_heads + 2  # L1H2
        assert dla.heads()[1, 2].mean() > 0
    assert wins == 8


def test_by_position_credits_the_token_the_induction_head_copies() -> None:
    model = ti.models.load("induction-2l")
    tokens = _repeated(seed=1)
    pos = 14
    dla = ti.lens.direct_logit_attribution(model, tokens, tokens[:, pos + 1], by="position", positions=pos,
                                           progress=False)
    sources = dla.values[: tokens.shape[1]]  # "pos j" rows
    assert (sources.mean(-1).argmax()) == pos - 10 + 1  # the token after the earlier occurrence
    assert sources[pos + 1:].abs().max() == 0  # causal: nothing from after the read position


def test_a_dla_result_saves_loads_and_renders(tmp_path: Path) -> None:
    model = ti.models.load("ordinal-4l")
    dla = ti.lens.direct_logit_attribution(model, ["after may comes", "after june comes"], " june", against=" july",
                                           by="head", progress=False)
    back = ti.results.Result.load(dla.save(tmp_path / "dla.safetensors"))
    assert isinstance(back, DLAResult) and back.by == "head"
    assert_close(back.values, dla.values)
    assert "logit diff" in repr(dla) and "frozen vs renormalised" in dla._repr_html_()
    assert "sum error" in dla.summary()
    page = ti.viz.Report("dla").add(dla).html()
    assert "DLAResult" in page


def test_a_dla_figure_draws_up_to_30_bars_by_default_and_refuses_more_components_than_there_are() -> None:
    dla = ti.lens.direct_logit_attribution(gpt2_style(), torch.randint(1, 61, (2, 5)), 3, by="layer", progress=False)
    n = dla.values.shape[0]
    assert n < 30 and len(dla.figure().data[0].x) == n and len(dla.figure(k=2).data[0].x) == 2
    with pytest.raises(SelectionError, match=rf"dla_figure: k={n + 1} is out of range: there are {n} components"):
        dla.figure(k=n + 1)


def test_dla_mistakes_fail_before_any_forward_pass() -> None:
    model = ti.models.load("induction-2l")
    tokens = _repeated()
    with pytest.raises(OptionError, match="attribution reads one position per prompt"):
        ti.lens.direct_logit_attribution(model, tokens, 3, positions="all", progress=False)
    with pytest.raises(UnsupportedError, match="attention-only"):
        ti.lens.direct_logit_attribution(model, tokens, 3, by="neuron", progress=False)
    with pytest.raises(InputError, match="one answer"):
        ti.lens.direct_logit_attribution(model, tokens, [3, 4], progress=False)
    with pytest.raises(ti.errors.OptionError, match="by must be one of"):
        ti.lens.direct_logit_attribution(model, tokens, 3, by="heads", progress=False)
    capped = llama_style()
    capped.cfg.output_logits_soft_cap = 30.0
    with pytest.raises(UnsupportedError, match="soft-caps its logits"):
        ti.lens.direct_logit_attribution(capped, tokens[:, :5] % 61, 3, progress=False)


def test_post_norm_blocks_refuse_per_head_attribution_but_not_per_component() -> None:
    from transformer_lens import HookedTransformer

    from .conftest import _cfg

    model = HookedTransformer(_cfg(act_fn="gelu", normalization_type="RMS", use_normalization_before_and_after=True))
    tokens = torch.randint(1, 61, (1, 5), generator=torch.Generator().manual_seed(0))
    with pytest.raises(UnsupportedError, match=r"by='head'\): each block normalises its attention and MLP outputs"):
        ti.lens.direct_logit_attribution(model, tokens, 3, by="head", progress=False)
    dla = ti.lens.direct_logit_attribution(model, tokens, 3, by="component", progress=False)
    assert_close(dla.total, model(tokens)[:, -1, 3], atol=1e-4, rtol=1e-5)


def test_a_padded_batch_attributes_as_its_prompts_one_by_one() -> None:
    model = ti.models.load("ordinal-4l")
    prompts = ["after may comes", "one two three four", "after june"]
    batched = ti.lens.direct_logit_attribution(model, prompts, " july", by="head", progress=False)
    for row, prompt in enumerate(prompts):
        alone = ti.lens.direct_logit_attribution(model, prompt, " july", by="head", progress=False)
        assert_close(batched.values[:, row], alone.values[:, 0], atol=1e-5, rtol=1e-4)
        assert_close(batched.extras["renormalised"][:, row], alone.extras["renormalised"][:, 0], atol=1e-5, rtol=1e-4)
