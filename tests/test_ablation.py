"""Ablation scans: exact against one-at-a-time hook runs, and they find the known mechanism."""

from typing import Any

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import gpt2_style, llama_style, no_hooks_attached
from tests.reliability import no_forward, tiny, tl_run
from tests.token_pair import CLEAN, METRIC, halve_last, user_hook
from tl_interp import hooks, site
from tl_interp.errors import InputError, OptionError, SelectionError, ShapeError
from tl_interp.hooks._ablate import resample_draws
from tl_interp.stats import bootstrap_mean_ci


@pytest.fixture(scope="module")
def induction() -> tuple[Any, torch.Tensor, Any]:
    from tl_interp.models.zoo import induction as zoo_induction

    model = ti.models.load("induction-2l")
    tokens = zoo_induction.repeated_tokens(24, 20, generator=torch.Generator().manual_seed(5))
    mask = torch.zeros_like(tokens)
    mask[:, 21:] = 1  # score only the predictions made inside the repeated half
    return model, tokens, ti.metrics.loss(tokens, mask)


def test_head_scan_finds_the_induction_circuit(induction: tuple) -> None:
    # The issue, literally: an ablation scan of heads on repeated random sequences puts the
    # known induction head first. "Known" is measured here, not read off the card: the head
    # with the highest induction score on these sequences, which must be the card's too.
    from tl_interp.models.zoo import induction as zoo_induction

    model, tokens, metric = induction
    _, scores = zoo_induction.head_scores(model, tokens)
    induction_head = divmod(int(scores.argmax()), model.cfg.n_heads)
    assert induction_head[0] == 1 and float(scores.max()) > 0.5
    assert list(induction_head) == model.card["evaluation"]["induction_head"]
    res = ti.ablation.scan(model, tokens, metric, over="head_index", progress=False)
    ranking = res.top(res.values.numel(), absolute=False, largest=not res.higher_is_better).to_frame()
    assert ranking["index"][0] == induction_head
    assert ranking["ci_low"][0] > 2.0  # nats of repeated-half loss: far from zero
    assert ranking["ci_low"][0] > 5 * ranking["ci_high"][1:].max()  # and far ahead
    assert ((ranking["ci_low"] <= ranking["effect"]) & (ranking["effect"] <= ranking["ci_high"])).all()


def test_scan_values_equal_one_at_a_time_runs(induction: tuple) -> None:
    model, tokens, metric = induction
    res = ti.ablation.scan(model, tokens, metric, over="head_index", progress=False)
    base = metric(model(tokens))
    for layer in range(model.cfg.n_layers):
        for head in range(model.cfg.n_heads):
            one = metric(hooks.zero_ablate(site("z", layer), heads=head).run(model, tokens))
            assert_close(res.values[layer, head], (one - base).float(), rtol=0, atol=1e-5)


UNITS = {"layers": dict(site=("attn_out", "mlp_out"), over=()), "neurons": dict(over="d_mlp"),
         "positions": dict(over="pos")}


@pytest.mark.parametrize("units, shape", [("layers", (2, 2)), ("neurons", (2, 64)), ("positions", (2, 6))])
def test_other_units_match_hand_written_ablations(units: str, shape: tuple) -> None:
    model = llama_style()
    tokens = torch.randint(1, 61, (4, 6), generator=torch.Generator().manual_seed(0))
    metric = ti.metrics.answer_logprob(torch.tensor([3, 4, 5, 6]), positions=-1)
    res = ti.ablation.scan(model, tokens, metric, progress=False, **UNITS[units])
    assert res.values.shape == shape
    base = metric(model(tokens))
    one = {"layers": hooks.zero_ablate(site("mlp_out", 1)),
           "neurons": hooks.zero_ablate(site("mlp_post", 1), neurons=5),
           "positions": hooks.zero_ablate(site("resid_pre", 1), positions=5)}[units]
    cell = {"layers": (1, 1), "neurons": (1, 5), "positions": (1, 5)}[units]
    assert_close(res.values[cell], (metric(one.run(model, tokens)) - base).float(), rtol=0, atol=1e-5)


def test_mean_ablation_uses_the_reference_mean_without_pads() -> None:
    model = gpt2_style()
    tokens = torch.randint(1, 61, (4, 6), generator=torch.Generator().manual_seed(1))
    reference = torch.randint(1, 61, (5, 8), generator=torch.Generator().manual_seed(2))
    ref_mask = torch.ones_like(reference)
    ref_mask[0, 5:] = 0
    metric = ti.metrics.answer_prob(7, positions=-1)
    res = ti.ablation.scan(model, tokens, metric, method="mean", reference=reference, reference_attention_mask=ref_mask,
                           progress=False)
    z = hooks.cache(site("z", 0)).collect(model, reference)[site("z", 0)]
    mean = z[ref_mask.bool()].mean(0)  # (head, d_head) over real reference tokens
    manual = hooks.mean_ablate(site("z", 0), mean, heads=2).run(model, tokens)
    assert_close(res.values[0, 2], (metric(manual) - metric(model(tokens))).float(), rtol=0, atol=1e-5)


def test_resample_scan_with_two_prompts_swaps_them_and_equals_the_hook_by_hand() -> None:
    model = gpt2_style()
    tokens = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(3))
    metric = ti.metrics.answer_logprob(torch.tensor([1, 2]), positions=-1)
    res = ti.ablation.scan(model, tokens, metric, method="resample", seed=0, progress=False)
    z = hooks.cache(site("z", 1)).collect(model, tokens)[site("z", 1)]
    by_hand = metric(hooks.resample_ablate(site("z", 1), z, seed=0, heads=3).run(model, tokens))
    assert_close(res.values[1, 3], (by_hand - metric(model(tokens))).float(), rtol=0, atol=1e-5)
    swapped = metric(hooks.patch(site("z", 1), z.flip(0), heads=3).run(model, tokens))  # each takes the other's
    assert_close(by_hand, swapped, rtol=0, atol=0)
    assert float(res.values.abs().max()) > 0  # self-draws would make every effect exactly 0


def test_resample_draws_are_other_reference_rows_and_seeded() -> None:
    from tl_interp.hooks._ablate import resample_draws

    for seed in range(20):
        draws = resample_draws(7, 7, seed, None, "test")
        assert bool((draws != torch.arange(7)).all()) and bool(((draws >= 0) & (draws < 7)).all())
    assert torch.equal(resample_draws(7, 7, 3, None, "t"), resample_draws(7, 7, 3, None, "t"))
    assert not torch.equal(resample_draws(50, 50, 0, None, "t"), resample_draws(50, 50, 1, None, "t"))
    with pytest.raises(ti.InputError, match="at least 2 prompts"):
        resample_draws(1, 1, 0, None, "resample")


def test_a_resampled_row_equals_some_other_reference_row() -> None:
    model = gpt2_style()
    tokens = torch.randint(1, 61, (5, 4), generator=torch.Generator().manual_seed(8))
    name = site("resid_pre", 1)
    ref = hooks.cache(name).collect(model, tokens)[name]
    after = hooks.cache(name)
    (hooks.resample_ablate(name, ref, seed=4) + after).run(model, tokens)
    for row in range(5):
        matches = [j for j in range(5) if torch.equal(after[name][row], ref[j])]
        assert matches and row not in matches


def test_mean_and_resample_scans_equal_the_hooks_applied_by_hand_cell_by_cell() -> None:
    model = llama_style()
    tokens = torch.randint(1, 61, (3, 5), generator=torch.Generator().manual_seed(9))
    metric = ti.metrics.logit_diff(torch.tensor([1, 2, 3]), 7, positions=-1)
    base = metric(model(tokens))
    name = site("mlp_post", 0)
    acts = hooks.cache(name).collect(model, tokens)[name]
    mean = acts.reshape(-1, acts.shape[-1]).mean(0)
    for method, factory in (("mean", lambda n: hooks.mean_ablate(name, mean, neurons=n)),
                            ("resample", lambda n: hooks.resample_ablate(name, acts, seed=2, neurons=n))):
        res = ti.ablation.scan(model, tokens, metric, over="d_mlp", method=method, seed=2, layers=[0],
                               progress=False)
        for n in (0, 7, 63):
            by_hand = metric(factory(n).run(model, tokens)) - base
            assert_close(res.values[0, n], by_hand.float(), rtol=0, atol=1e-5), (method, n)


def test_any_callable_metric_works_and_equals_the_metric_object() -> None:
    model = gpt2_style()
    tokens = torch.randint(1, 61, (3, 5), generator=torch.Generator().manual_seed(1))
    metric = ti.metrics.answer_prob(7)

    def plain(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1].softmax(-1)[:, 7].mean()

    a = ti.ablation.scan(model, tokens, metric, progress=False)
    b = ti.ablation.scan(model, tokens, plain, progress=False)
    assert_close(a.values, b.values, rtol=0, atol=1e-6)
    assert "ci_low" in a.extras and "ci_low" not in b.extras  # intervals need per-prompt values
    assert b.top(2).columns["index"][0] == a.top(2).columns["index"][0]


def test_batched_scan_equals_the_mean_of_smaller_batches() -> None:
    model = llama_style()
    tokens = torch.randint(1, 61, (4, 6), generator=torch.Generator().manual_seed(6))
    answers = torch.tensor([1, 2, 3, 4])
    whole = ti.ablation.scan(model, tokens, ti.metrics.logit_diff(answers, 9), progress=False)
    halves = [ti.ablation.scan(model, tokens[i:i + 2], ti.metrics.logit_diff(answers[i:i + 2], 9), progress=False)
              for i in (0, 2)]
    assert_close(whole.values, (halves[0].values + halves[1].values) / 2, rtol=1e-5, atol=1e-5)


def test_result_round_trips(tmp_path: Any, induction: tuple) -> None:
    model, tokens, metric = induction
    res = ti.ablation.scan(model, tokens, metric, progress=False)
    loaded = ti.results.Result.load(res.save(tmp_path / "scan.safetensors"))
    assert type(loaded) is type(res) and torch.equal(loaded.values, res.values)
    assert loaded.top(3) == res.top(3)


def test_bootstrap_interval_matches_scipy() -> None:
    x = torch.randn(2, 60, generator=torch.Generator().manual_seed(0))
    low, high = bootstrap_mean_ci(x, n_boot=20000, seed=0)
    for i in range(2):
        ref = scipy_stats.bootstrap((x[i].numpy(),), np.mean, n_resamples=20000, method="percentile",
                                    random_state=0).confidence_interval
        assert abs(low[i].item() - ref.low) < 0.02 and abs(high[i].item() - ref.high) < 0.02


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(units="blocks"), ti.OptionError, r"units must be one of heads, neurons, positions, layers"),
    (dict(method="bogus"), ti.OptionError, r"method must be one of 'zero', 'mean', 'resample', not 'bogus'"),
    (dict(n_boot=0), ti.OptionError, r"n_boot must be at least 1"),
    (dict(over="d_model"), ti.OptionError, r"over=\('d_model',\) has no default site"),
    (dict(site="z", over="pos"), ti.OptionError, r"a z sweep goes over"),
    (dict(reference_attention_mask=torch.ones(3, 5, dtype=torch.long), method="mean"), ti.InputError,
     r"reference_attention_mask was given without reference="),
    (dict(reference=torch.randint(1, 61, (2, 5))), ti.InputError, r"zero ablation uses no reference"),
    (dict(layers=[5]), ti.SelectionError, r"layers \[5\] are out of range"),
])
def test_bad_input_fails_before_any_forward_pass(kwargs: dict, error: type, message: str) -> None:
    model = gpt2_style()
    tokens = torch.randint(1, 61, (3, 5))
    calls: list[int] = []
    model.hook_dict["hook_embed"].add_hook(lambda act, hook: calls.append(1))
    with pytest.raises(error, match=message):
        ti.ablation.scan(model, tokens, ti.metrics.answer_prob(1), progress=False, **kwargs)
    assert calls == []


def test_a_per_prompt_metric_needs_two_prompts_and_ranking_checks_k() -> None:
    model = gpt2_style()
    tokens = torch.randint(1, 61, (3, 5))
    with pytest.raises(ti.InputError, match="needs at least 2 prompts"):
        ti.ablation.scan(model, tokens[:1], ti.metrics.answer_prob(1), progress=False)
    res = ti.ablation.scan(model, tokens, ti.metrics.answer_prob(1), progress=False)
    for bad in (0, -1):
        with pytest.raises(ti.SelectionError, match=r"k=-?\d is out of range; choose k >= 1"):
            res.top(bad)
    assert len(res.top(res.values.numel())) == res.values.numel() and len(res.top(3)) == 3
    with pytest.raises(ti.SelectionError, match=rf"there are {res.values.numel()} entries"):
        res.top(res.values.numel() + 5)  # never quietly fewer than asked for


# -- issue 10's reliability probes (formerly tests/test_reliability_studies.py), beside the module they test --
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


def test_a_reference_that_cannot_exclude_self_is_refused() -> None:
    # probe 4: "a reference set that can't provide that is an error"
    model = tiny()
    with pytest.raises(InputError, match="needs at least 2 prompts, so each can draw another"):
        ti.ablation.scan(model, CLEAN[:1], lambda x: x[:, -1, 1].mean(), method="resample", progress=False)
    with pytest.raises(ShapeError, match="the reference has 3 rows and the batch 2"):
        hooks.resample_ablate(site("resid_pre", 1), torch.randn(3, 6, 32), exclude_self=True).run(model, CLEAN)
    assert no_hooks_attached(model)


# -- issue item 6: fast paths and the user's hooks on the head and final block ---------------
def test_a_users_hook_on_ln_final_is_honoured_by_scans() -> None:
    # probe 6 for scans: compared with TL hooks cell by cell
    model = tiny()
    with user_hook(model, "ln_final.hook_normalized", halve_last):
        scan = ti.ablation.scan(model, CLEAN, METRIC, site="z", n_boot=10, progress=False)
        base = METRIC(model(CLEAN))
        for layer, head in ((0, 1), (1, 3)):
            def zero(a: torch.Tensor, hook: Any, head: int = head) -> torch.Tensor:
                out = a.clone()
                out[:, :, head] = 0
                return out

            expected = METRIC(model.run_with_hooks(CLEAN, fwd_hooks=[(site("z", layer), zero)])) - base
            assert_close(scan.values[layer, head], expected, rtol=1e-5, atol=1e-5)


# -- issue item 11: references, baselines, rankings -----------------------------------------
def test_a_reference_mask_without_a_reference_is_refused_before_any_forward_pass() -> None:
    # probe 11: "reference_mask is dropped when reference is None"
    model = tiny()
    with no_forward(model), pytest.raises(InputError, match="reference_attention_mask was given without reference="):
        ti.ablation.scan(model, CLEAN, METRIC, method="mean", reference_attention_mask=torch.ones(2, 6), progress=False)


def test_an_empty_reference_is_refused_before_any_forward_pass() -> None:
    # probe 11: "an empty reference gives NaN effects"
    model = tiny()
    with no_forward(model), pytest.raises(InputError, match=r"reference: token ids must be .* got shape \(0, 6\)"):
        ti.ablation.scan(model, CLEAN, METRIC, method="mean", reference=torch.zeros(0, 6, dtype=torch.long),
                         progress=False)
    with pytest.raises(InputError, match="the reference set is empty"):
        hooks.resample_ablate(site("resid_pre", 0), torch.zeros(0, 6, 32))


# -- unclear errors ------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, message", [
    ({"n_boot": 0}, OptionError, "n_boot must be at least 1, got 0"),  # unclear error: n_boot=0
    ({"method": "max"}, OptionError, "method must be one of 'zero', 'mean', 'resample', not 'max'"),
    ({"reference": CLEAN}, InputError, "zero ablation uses no reference"),  # own probe
    ({"layers": [2]}, SelectionError, r"layers \[2\] are out of range; the model has layers 0..1"),  # own probe
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


def test_mean_ablation_averages_only_the_real_tokens_of_a_padded_reference() -> None:
    # own probe: the reference's padding must not enter the mean
    model = tiny()
    reference = torch.randint(1, 61, (3, 6), generator=torch.Generator().manual_seed(7))
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]])
    scan = ti.ablation.scan(model, CLEAN, METRIC, site="z", method="mean", reference=reference,
                            reference_attention_mask=mask,
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
