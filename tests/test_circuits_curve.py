"""MIB's faithfulness curve: f as a ratio of means, CPR and CMD as MIB's trapezoids, intervals, stability."""

import pytest
import torch

from tl_interp import stats
from tl_interp.circuits._curve import MIB_BUDGETS, area_under, curve_statistics
from tl_interp.circuits._stability import stability
from tl_interp.errors import SelectionError, UnsupportedError


def _mib_areas(faithfulnesses: list[float], percentages=MIB_BUDGETS) -> tuple[float, float]:
    """MIB's ``evaluate_area_under_curve`` loop, transcribed (linear axis)."""
    area_under_, area_from_1 = 0.0, 0.0
    for i in range(len(faithfulnesses) - 1):
        x_1, x_2 = percentages[i], percentages[i + 1]
        area_from_1 += (x_2 - x_1) * ((abs(1.0 - faithfulnesses[i]) + abs(1.0 - faithfulnesses[i + 1])) / 2)
        area_under_ += (x_2 - x_1) * ((faithfulnesses[i] + faithfulnesses[i + 1]) / 2)
    return area_under_, area_from_1


def _case(seed: int = 0, methods: int = 3, prompts: int = 12):
    g = torch.Generator().manual_seed(seed)
    clean = 3 + torch.randn(prompts, generator=g, dtype=torch.float64)
    corrupted = torch.randn(prompts, generator=g, dtype=torch.float64)
    level = torch.linspace(0, 1.2, len(MIB_BUDGETS), dtype=torch.float64)  # f climbs past 1 then stays
    circuit = corrupted + level[None, :, None] * (clean - corrupted) + 0.3 * torch.randn(
        methods, len(MIB_BUDGETS), prompts, generator=g, dtype=torch.float64)
    return circuit, clean, corrupted


def test_cpr_and_cmd_are_mibs_trapezoids_of_the_ratio_of_means() -> None:
    circuit, clean, corrupted = _case()
    out = curve_statistics(circuit, clean, corrupted, MIB_BUDGETS, n_boot=50)
    for m in range(circuit.shape[0]):
        f = [(float(circuit[m, b].mean()) - float(corrupted.mean())) / (float(clean.mean()) - float(corrupted.mean()))
             for b in range(len(MIB_BUDGETS))]
        torch.testing.assert_close(out["f"][m], torch.tensor(f, dtype=torch.float64))
        cpr, cmd = _mib_areas(f)
        assert out["cpr"][m].item() == pytest.approx(cpr, abs=1e-12)
        assert out["cmd"][m].item() == pytest.approx(cmd, abs=1e-12)


def test_a_perfect_circuit_has_cpr_of_the_budget_span_and_zero_cmd() -> None:
    f = torch.ones(len(MIB_BUDGETS))
    assert area_under(MIB_BUDGETS, f).item() == pytest.approx(1 - 0.001)
    assert area_under(MIB_BUDGETS, (1 - f).abs()).item() == 0.0


def test_intervals_are_the_percentiles_of_the_statistic_on_resampled_prompts() -> None:
    circuit, clean, corrupted = _case(1, methods=2, prompts=9)
    out = curve_statistics(circuit, clean, corrupted, MIB_BUDGETS, n_boot=300, seed=4)
    cprs = []
    for row in stats.bootstrap_indices(9, 300, seed=4):
        k = corrupted[row].mean()
        f = (circuit[:, :, row].mean(-1) - k) / (clean[row].mean() - k)
        cprs.append(torch.tensor([_mib_areas(f[m].tolist())[0] for m in range(2)], dtype=torch.float64))
    low, high = stats.percentile_interval(torch.stack(cprs), 0.05, dim=0)
    torch.testing.assert_close(out["cpr_low"], low)
    torch.testing.assert_close(out["cpr_high"], high)
    assert bool((out["f_low"] <= out["f"]).all() and (out["f"] <= out["f_high"]).all())


def test_no_gap_between_clean_and_corrupted_is_refused() -> None:
    circuit, clean, _ = _case()
    with pytest.raises(UnsupportedError, match="faithfulness .* is undefined"):
        curve_statistics(circuit, clean, clean.clone(), MIB_BUDGETS)


class _Scores:
    def __init__(self, per_prompt: torch.Tensor) -> None:
        self.per_prompt, self.names, self.method = per_prompt, tuple(f"e{i}" for i in range(per_prompt.shape[1])), "eap"
        self.scores = per_prompt.mean(0)


def test_stability_counts_top_k_edges_that_survive_resampling() -> None:
    g = torch.Generator().manual_seed(0)
    # two edges far above the rest on every prompt, then twenty indistinguishable ones
    per_prompt = torch.cat([torch.full((30, 2), 10.0) + torch.randn(30, 2, generator=g),
                            torch.randn(30, 20, generator=g)], dim=1)
    result = stability(_Scores(per_prompt), k=[2, 5], n_boot=200)
    assert result.survival[0].item() == 1.0  # the two strong edges always come back
    assert result.survival[1].item() < 0.9  # the next three are noise: often replaced
    by_hand = []
    for row in stats.bootstrap_indices(30, 200, seed=0):
        top = set(per_prompt[row].mean(0).abs().topk(5).indices.tolist())
        by_hand.append(len(top & set(per_prompt.mean(0).abs().topk(5).indices.tolist())) / 5)
    assert result.survival[1].item() == pytest.approx(sum(by_hand) / len(by_hand))
    low, high = stats.percentile_interval(
        torch.stack([per_prompt[row].mean(0) for row in stats.bootstrap_indices(30, 200, seed=0)]).double(), 0.05, dim=0)
    torch.testing.assert_close(result.extras["ci_low"], low, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(result.extras["ci_high"], high, atol=1e-5, rtol=1e-5)
    assert [e for e, _ in result.unstable(5)] and all(e not in ("e0", "e1") for e, _ in result.unstable(5))
    assert len(result.unstable(22, threshold=1.01)) == 22  # every edge
    with pytest.raises(SelectionError, match=r"EdgeStability.unstable: k=23 is out of range: there are 22 edges"):
        result.unstable(23)


def test_stability_saves_and_loads(tmp_path) -> None:
    from tl_interp.results import Result

    per_prompt = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    result = stability(_Scores(per_prompt), k=2, n_boot=20)
    back = Result.load(result.save(tmp_path / "s.safetensors"))
    assert type(back).__name__ == "EdgeStability" and back.ks == [2]
    torch.testing.assert_close(back.extras["in_top_k"], result.extras["in_top_k"])
