"""Reliability probes (issue 10): patching sweeps, ablation scans, attribution, results.

References are TransformerLens's own ``get_act_patch_*`` functions and hand-written hooks
run with ``run_with_hooks``; every "fails before any forward pass" uses ``no_forward``.
"""

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import scipy.stats
import torch
from torch.testing import assert_close
from transformer_lens import patching as tlp

import tl_interp as ti
from tests.conftest import no_hooks_attached
from tests.reliability import no_forward, tiny, tl_run
from tl_interp import hooks, site
from tl_interp.ablation import AblationResult
from tl_interp.errors import InputError, OptionError, ShapeError, UnsupportedError
from tl_interp.hooks._ablate import resample_draws
from tl_interp.models import Tokenized
from tl_interp.patching import PatchingResult
from tl_interp.results import Provenance, Result

G = torch.Generator().manual_seed(0)
CLEAN = torch.randint(1, 61, (2, 6), generator=G)
CORRUPTED = CLEAN.clone()
CORRUPTED[:, 2] = torch.randint(1, 61, (2,), generator=G)
METRIC = ti.metrics.logit_diff(torch.tensor([3, 7]), torch.tensor([5, 9]), positions=-1)  # unpadded


@contextlib.contextmanager
def user_hook(model: Any, name: str, fn: Any) -> Iterator[None]:
    """A user's own (permanent) TransformerLens hook, removed afterwards."""
    model.add_hook(name, fn, is_permanent=True)
    try:
        yield
    finally:
        model.reset_hooks(including_permanent=True)


def tl_sweep(model: Any) -> torch.Tensor:
    """TransformerLens's residual-stream patching sweep of CLEAN into CORRUPTED (hooks on the model stay)."""
    _, clean_cache = model.run_with_cache(CLEAN)
    return tlp.get_act_patch_resid_pre(model, CORRUPTED, clean_cache, METRIC)


# -- issue item 4: resample ablation never draws a prompt's own activations -----------------
def test_resample_with_two_prompts_swaps_them_exactly() -> None:
    # probe 4: "with 2 prompts, seed 0, every effect is exactly 0" -- each must draw the other
    model = tiny()
    scan = ti.ablation.scan(model, CLEAN, METRIC, site="z", method="resample", seed=0, n_boot=10, progress=False)
    assert bool((scan.values != 0).any())
    _, cache = model.run_with_cache(CLEAN)
    base = METRIC(model(CLEAN))
    for layer in range(2):
        for head in range(4):
            def swap(a: torch.Tensor, hook: Any, layer: int = layer, head: int = head) -> torch.Tensor:
                out = a.clone()
                out[:, :, head] = cache[site("z", layer)][[1, 0], :, head]
                return out

            effect = METRIC(tl_run(model, CLEAN, [(site("z", layer), swap)])) - base
            assert_close(scan.values[layer, head], effect, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n", [2, 3, 5, 9])
def test_resample_draws_from_the_batch_are_a_derangement(n: int) -> None:
    # probe 4: draws come from other prompts, for every seed
    for seed in range(25):
        draw = resample_draws(n, n, seed, None, "test")
        assert bool((draw != torch.arange(n)).all()) and bool(((draw >= 0) & (draw < n)).all())


def test_a_separate_reference_set_is_drawn_from_uniformly_with_the_seed() -> None:
    # probe 4, correct behaviour: a reference of another size may give any of its rows. Checked as
    # properties of what the model sees, not against a copy of the implementation's RNG call:
    # each row becomes one whole reference row, every row is drawn in near-equal shares
    # (chi-square), the same seed repeats the draws and another seed changes them.
    model, name = tiny(), site("resid_pre", 1)
    tokens = torch.randint(1, 61, (40, 6), generator=torch.Generator().manual_seed(5))
    reference = torch.randn(7, 6, 32, generator=torch.Generator().manual_seed(6))

    def drawn_rows(seed: int) -> list[int]:
        seen = hooks.cache(name)
        (hooks.resample_ablate(name, reference, seed=seed) + seen).run(model, tokens)
        rows = [[j for j in range(7) if torch.equal(act, reference[j])] for act in seen[name]]
        assert all(len(r) == 1 for r in rows), "every ablated row is exactly one reference row"
        return [r[0] for r in rows]

    draws = {seed: drawn_rows(seed) for seed in range(10)}
    counts = torch.bincount(torch.tensor(sum(draws.values(), [])), minlength=7)
    assert int(counts.min()) > 0, f"some reference rows are never drawn: {counts.tolist()}"
    assert scipy.stats.chisquare(counts.numpy()).pvalue > 1e-3, f"draws are far from uniform: {counts.tolist()}"
    assert drawn_rows(3) == draws[3] and draws[3] != draws[4]
    got = hooks.resample_ablate(name, reference, seed=3).run(model, tokens)  # the output follows the draws
    assert_close(got, tl_run(model, tokens, [(name, lambda a, hook: reference[draws[3]])]), rtol=0, atol=0)


def test_a_reference_that_cannot_exclude_self_is_refused() -> None:
    # probe 4: "a reference set that can't provide that is an error"
    model = tiny()
    with pytest.raises(InputError, match="needs at least 2 prompts, so each can draw another"):
        ti.ablation.scan(model, CLEAN[:1], lambda x: x[:, -1, 1].mean(), method="resample", progress=False)
    with pytest.raises(ShapeError, match="the reference has 3 rows and the batch 2"):
        hooks.resample_ablate(site("resid_pre", 1), torch.randn(3, 6, 32), exclude_self=True).run(model, CLEAN)
    assert no_hooks_attached(model)


# -- issue item 6: fast paths and the user's hooks on the head and final block ---------------
def _halve_last(a: torch.Tensor, hook: Any) -> torch.Tensor:
    out = a.clone()
    out[:, -1] = out[:, -1] * 0.5  # positional: only the last position
    return out


def test_a_users_positional_hook_on_ln_final_is_honoured_by_sweeps() -> None:
    # probe 6: "a user's positional hook there gives wrong values (or an IndexError) in sweeps"
    model = tiny()
    with user_hook(model, "ln_final.hook_normalized", _halve_last):
        expected = tl_sweep(model)
        got = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False)
        assert "off" in got.provenance.settings["engine"]["read_only"]
    assert_close(got.values, expected, rtol=1e-5, atol=1e-5)


def test_a_users_hook_on_unembed_is_honoured_by_sweeps() -> None:
    # probe 6: a plain PyTorch forward hook on the unembedding, acting at position 0 only
    model = tiny()

    def bump_first(module: Any, inputs: Any, out: torch.Tensor) -> torch.Tensor:
        out = out.clone()
        out[:, 0, 3] += 100.0
        return out

    handle = model.unembed.register_forward_hook(bump_first)
    try:
        expected = tl_sweep(model)
        got = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False)
    finally:
        handle.remove()
    assert_close(got.values, expected, rtol=1e-5, atol=1e-5)


def test_a_users_positional_hook_in_the_final_block_is_honoured() -> None:
    # probe 6 for the split-final-block path
    model = tiny()
    with user_hook(model, "blocks.1.hook_resid_mid", _halve_last):
        expected = tl_sweep(model)
        got = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False)
    assert_close(got.values, expected, rtol=1e-5, atol=1e-5)


def test_a_users_hook_on_ln_final_is_honoured_by_scans() -> None:
    # probe 6 for scans: compared with TL hooks cell by cell
    model = tiny()
    with user_hook(model, "ln_final.hook_normalized", _halve_last):
        scan = ti.ablation.scan(model, CLEAN, METRIC, site="z", n_boot=10, progress=False)
        base = METRIC(model(CLEAN))
        for layer, head in ((0, 1), (1, 3)):
            def zero(a: torch.Tensor, hook: Any, head: int = head) -> torch.Tensor:
                out = a.clone()
                out[:, :, head] = 0
                return out

            expected = METRIC(model.run_with_hooks(CLEAN, fwd_hooks=[(site("z", layer), zero)])) - base
            assert_close(scan.values[layer, head], expected, rtol=1e-5, atol=1e-5)


def test_a_sweep_inside_an_applied_intervention_sees_the_intervened_model() -> None:
    # own probe: an outer .applied() (positional) around a study
    model = tiny()
    outer = hooks.zero_ablate(site("z", 1), heads=0, positions=-1)

    def zero_last_head0(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[:, -1, 0] = 0
        return out

    with user_hook(model, site("z", 1), zero_last_head0):
        expected = tl_sweep(model)
    with outer.applied(model):
        got = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False)
    assert_close(got.values, expected, rtol=1e-5, atol=1e-5)
    assert no_hooks_attached(model)


# -- issue item 11: references, baselines, rankings -----------------------------------------
def test_a_reference_mask_without_a_reference_is_refused_before_any_forward_pass() -> None:
    # probe 11: "reference_mask is dropped when reference is None"
    model = tiny()
    with no_forward(model), pytest.raises(InputError, match="reference_mask was given without reference="):
        ti.ablation.scan(model, CLEAN, METRIC, method="mean", reference_mask=torch.ones(2, 6), progress=False)


def test_an_empty_reference_is_refused_before_any_forward_pass() -> None:
    # probe 11: "an empty reference gives NaN effects"
    model = tiny()
    with no_forward(model), pytest.raises(InputError, match=r"reference: token ids must be .* got shape \(0, 6\)"):
        ti.ablation.scan(model, CLEAN, METRIC, method="mean", reference=torch.zeros(0, 6, dtype=torch.long),
                         progress=False)
    with pytest.raises(InputError, match="the reference set is empty"):
        hooks.resample_ablate(site("resid_pre", 0), torch.zeros(0, 6, 32))


def test_equal_clean_and_corrupted_runs_have_no_normalized_view() -> None:
    # probe 11: "clean == corrupted gives NaN normalized" (or, with rounding, arbitrary numbers)
    result = ti.patching.sweep(tiny(), CLEAN, CLEAN, METRIC, progress=False)
    with pytest.raises(UnsupportedError, match="give the same metric value .* within float32 rounding.*read .values"):
        result.normalized
    assert_close(result.values, result.base.expand_as(result.values), rtol=1e-6, atol=1e-6)


def _patching(values: torch.Tensor, base: float = 0.0, source: float = 1.0) -> PatchingResult:
    return PatchingResult(values=values, axes=("layer", "pos"), metric="m", provenance=Provenance.make("test"),
                          extras={"base": torch.tensor(base), "source": torch.tensor(source)})


def test_top_lists_nan_cells_last() -> None:
    # probe 11: "top() lists NaN first"
    values = torch.tensor([[float("nan"), 0.5], [-2.0, float("nan")]])
    top = _patching(values).top(4, by="values")
    assert [v for _, v in top[:2]] == [-2.0, 0.5]
    assert all(v != v for _, v in top[2:])


@pytest.mark.parametrize("k", [0, -1, True, 2.5])
def test_ranking_refuses_a_k_that_is_not_a_positive_int(k: Any) -> None:
    # probe 11: "ranking(0) returns everything and ranking(-1) drops one"
    result = AblationResult(values=torch.tensor([[0.1, -0.3]]), axes=("layer", "head_index"), metric="m",
                            provenance=Provenance.make("test"))
    with pytest.raises(OptionError, match="ranking\\(k\\): k must be a positive int"):
        result.ranking(k)


def test_ranking_puts_the_most_harmful_unit_first() -> None:
    # probe 11, correct behaviour: with higher_is_better the most negative effect is first
    result = AblationResult(values=torch.tensor([[0.1, -0.3], [0.2, -0.1]]), axes=("layer", "head_index"), metric="m",
                            provenance=Provenance.make("test", settings={"higher_is_better": True}))
    assert [r["index"] for r in result.ranking(2)] == [(0, 1), (1, 1)]
    assert len(result.ranking()) == 4 and len(result.ranking(10)) == 4


# -- unclear errors ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, message", [
    ({"n_boot": 0}, OptionError, "n_boot must be at least 1, got 0"),  # unclear error: n_boot=0
    ({"method": "max"}, OptionError, "method must be one of 'zero', 'mean', 'resample', not 'max'"),
    ({"reference": CLEAN}, InputError, "zero ablation uses no reference"),  # own probe
    ({"layers": [2]}, OptionError, r"layers \[2\] are not valid; the model has layers 0..1"),  # own probe
    ({"site": "resid_pr", "over": "pos"}, OptionError, "got 'resid_pr'"),  # own probe
    ({"over": "neuron_index"}, OptionError, "has no default site; name it with site="),  # own probe
])
def test_scan_options_are_checked_before_any_forward_pass(kwargs: dict[str, Any], error: type, message: str) -> None:
    model = tiny()
    with no_forward(model), pytest.raises(error, match=message):
        ti.ablation.scan(model, CLEAN, METRIC, progress=False, **kwargs)


def test_a_per_prompt_scan_of_one_prompt_is_refused_before_any_forward_pass() -> None:
    with no_forward(tiny()), pytest.raises(InputError, match="needs at least 2 prompts for its bootstrap"):
        ti.ablation.scan(tiny(), CLEAN[:1], ti.metrics.logit_diff(3, 5), progress=False)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"site": "resid_pr"}, OptionError, "sweeps cover the site kinds .* got 'resid_pr'"),  # own probe
    ({"over": "head_index"}, OptionError, "a resid_pre sweep goes over"),  # own probe
    ({"direction": "up"}, OptionError, "direction must be one of 'denoise', 'noise'"),  # own probe
    ({"layers": []}, OptionError, "layers is empty"),  # own probe
    ({"layers": [-1]}, OptionError, r"layers \[-1\] are out of range"),  # own probe: negative layer
])
def test_sweep_options_are_checked_before_any_forward_pass(kwargs: dict[str, Any], error: type, message: str) -> None:
    model = tiny()
    with no_forward(model), pytest.raises(error, match=message):
        ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False, **kwargs)


def test_clean_and_corrupted_that_do_not_line_up_are_refused_before_any_forward_pass() -> None:
    model = tiny()
    with no_forward(model):
        with pytest.raises(ShapeError, match=r"same shape .* clean \(2, 6\) and corrupted \(2, 5\)"):
            ti.patching.sweep(model, CLEAN, CORRUPTED[:, :5], METRIC, progress=False)
        with pytest.raises(ShapeError, match=r"padded differently in rows \[0\]"):
            clean = Tokenized(CLEAN, torch.tensor([[1] * 5 + [0], [1] * 6]), torch.tensor([4, 5]), [["x"] * 6] * 2)
            corrupted = Tokenized(CORRUPTED, torch.ones(2, 6, dtype=torch.long), torch.tensor([5, 5]), [["x"] * 6] * 2)
            ti.patching.sweep(model, clean, corrupted, METRIC, progress=False)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"metric": ti.metrics.accuracy(3)}, InputError, "needs a metric autograd can differentiate"),  # unclear error
    ({"method": "ig", "steps": 0}, OptionError, "steps must be at least 1, got 0"),  # own probe
    ({"method": "grad"}, OptionError, "method must be one of 'atp', 'ig'"),  # own probe
])
def test_attribution_refuses_what_it_cannot_compute_before_any_forward_pass(kwargs: dict[str, Any], error: type,
                                                                             message: str) -> None:
    model = tiny()
    metric = kwargs.pop("metric", METRIC)
    with no_forward(model), pytest.raises(error, match=message):
        ti.patching.attribution(model, CLEAN, CORRUPTED, metric, progress=False, **kwargs)


def test_a_figure_of_a_view_that_does_not_exist_names_the_views() -> None:
    # unclear error: result.figure(which="bogus") raised a bare KeyError
    result = _patching(torch.randn(2, 6))
    with pytest.raises(OptionError, match=r"figure\(which='bogus'\): .* choose one of 'values', 'base', 'normalized'"):
        result.figure(which="bogus")
    with pytest.raises(OptionError, match="that view has shape \\(\\)"):
        result.figure(which="base")
    fig = result.figure(which="normalized")
    assert_close(torch.tensor(fig.data[0].z, dtype=torch.float64), result.normalized.double(), rtol=0, atol=0)


def test_a_results_repr_is_a_short_summary_and_the_data_stays_whole() -> None:
    # unclear error: "a result's repr prints every tensor in full (7 KB for a 30 x 14 sweep)"
    values = torch.randn(30, 14, generator=torch.Generator().manual_seed(2))
    result = _patching(values)
    text = repr(result)
    assert len(text) < 300 and "layer=30, pos=14" in text and "top:" in text
    flat = values.flatten()
    assert f"{float(flat[flat.abs().argmax()]):.4g}" in text
    frame = result.to_frame()
    assert len(frame) == 420 and torch.equal(torch.tensor(frame["value"].to_numpy()), values.flatten())


def test_a_reference_of_another_length_for_per_position_means_is_refused_before_any_forward_pass() -> None:
    model = tiny()
    with no_forward(model), pytest.raises(ShapeError, match="token length"):
        ti.ablation.scan(model, CLEAN, METRIC, method="mean", mean_over="prompts", reference=CLEAN[:, :4],
                         n_boot=10, progress=False)


def test_a_resample_reference_of_another_length_is_refused_before_any_forward_pass() -> None:
    model = tiny()
    with no_forward(model), pytest.raises(ShapeError, match="positions"):
        ti.ablation.scan(model, CLEAN, METRIC, method="resample", reference=torch.randint(1, 61, (3, 4)), n_boot=10,
                         progress=False)


# -- further probes ------------------------------------------------------------------------------
def test_a_noising_sweep_equals_transformer_lens_patching_corrupted_into_clean() -> None:
    # own probe: direction="noise" is the mirror image (corrupted activations into the clean run)
    model = tiny()
    _, corrupted_cache = model.run_with_cache(CORRUPTED)
    expected = tlp.get_act_patch_resid_pre(model, CLEAN, corrupted_cache, METRIC)
    got = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, direction="noise", progress=False)
    assert_close(got.values, expected, rtol=1e-5, atol=1e-5)


def test_mean_ablation_averages_only_the_real_tokens_of_a_padded_reference() -> None:
    # own probe: the reference's padding must not enter the mean
    model = tiny()
    reference = torch.randint(1, 61, (3, 6), generator=torch.Generator().manual_seed(7))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    scan = ti.ablation.scan(model, CLEAN, METRIC, site="z", method="mean", reference=reference, reference_mask=mask,
                            n_boot=10, progress=False)
    _, cache = model.run_with_cache(reference, attention_mask=mask)
    z = cache[site("z", 1)].double()  # (3, 6, heads, d_head)
    mean = (z * mask[..., None, None]).sum((0, 1)) / mask.sum()
    base = METRIC(model(CLEAN))

    def mean_head_2(a: torch.Tensor, hook: Any) -> torch.Tensor:
        out = a.clone()
        out[:, :, 2] = mean[2].to(a.dtype)
        return out

    expected = METRIC(tl_run(model, CLEAN, [(site("z", 1), mean_head_2)])) - base
    assert_close(scan.values[1, 2], expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_sweeps_take_the_fast_paths_exactly(dtype: torch.dtype) -> None:
    # own probe: float16 / bfloat16 models, fast paths against the model's full forward
    model = tiny(dtype=dtype)
    fast = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False)
    exact = ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False, fast_paths=False)
    assert bool(fast.values.isfinite().all())
    assert_close(fast.values, exact.values, rtol=2e-2, atol=2e-2)


def test_figures_and_top_refuse_what_they_cannot_show() -> None:
    # own probes: a 4-D result has no default figure; top(k) needs k >= 1 and a known view
    four = Result(values=torch.zeros(2, 2, 2, 2), axes=("layer", "pos", "head_index", "d_head"), metric="m",
                  provenance=Provenance.make("test"))
    with pytest.raises(UnsupportedError, match="no default figure for 4-D values"):
        four.figure()
    with pytest.raises(OptionError, match="k must be a positive int"):
        _patching(torch.randn(2, 6)).top(0)
    with pytest.raises(OptionError, match="takes 'normalized' or 'values'"):
        _patching(torch.randn(2, 6)).top(3, by="recovered")
