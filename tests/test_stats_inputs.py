"""ti.stats refuses non-finite statistics and malformed permutations instead of a p-value."""

import numpy as np
import pytest
import scipy.stats
import torch
from torch.testing import assert_close

import tl_interp as ti
from tl_interp import geometry, similarity as sim, stats
from tl_interp.errors import InputError, ShapeError


# -- issue 10's reliability probes (formerly tests/test_reliability_statistics.py) --
def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


X, Y = gaussian(12, 4, seed=1), gaussian(12, 3, seed=2)


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(a[:, 0] @ b[:, 0])


# -- item 3: a non-finite statistic has no p-value ---------------------------------------------
def nan_everywhere(a: torch.Tensor, b: torch.Tensor) -> float:
    return float("nan")


def infinite(a: torch.Tensor, b: torch.Tensor) -> float:
    return float("inf")


def nan_under_permutation(a: torch.Tensor, b: torch.Tensor) -> float:
    # finite on the true pairing, NaN on every other: only the null is non-finite
    return 1.0 if torch.equal(b, Y) else float("nan")


@pytest.mark.parametrize("statistic, what", [
    (nan_everywhere, r"the observed value of the statistic nan_everywhere has 1 NaN/Inf entries \(first at index "
                     r"\(\)\): 1 NaN"),
    (infinite, r"the observed value of the statistic infinite has 1 NaN/Inf entries .*: 1 \+inf"),
    (nan_under_permutation, r"the null of the statistic nan_under_permutation \(its value under each of the 99 "
                            r"permutations\) has 99 NaN/Inf entries"),
])
def test_a_non_finite_statistic_gets_an_error_not_the_smallest_p_value(statistic, what) -> None:
    # before: p = 1 / (B + 1) = 0.01 for all three, the most significant value possible
    with pytest.raises(InputError, match=what):
        stats.permutation_test(statistic, X, Y, n_permutations=99)


def test_permutation_p_value_refuses_a_nan_null() -> None:
    null = torch.tensor([0.1, float("nan"), 0.3], dtype=torch.float64)
    with pytest.raises(InputError, match=r"permutation_p_value: the null has 1 NaN/Inf entries \(first at index "
                                         r"\(1,\)\)"):
        stats.permutation_p_value(null, torch.tensor(0.5, dtype=torch.float64), "greater")


def test_a_finite_statistic_keeps_scipys_permutation_p_value() -> None:
    # the refusal changes nothing for finite statistics: the p-value of the same permutations, by hand
    perms = stats.permutation_indices(12, 199, seed=3)
    res = stats.permutation_test(dot, X, Y, permutations=perms)
    null = np.array([float(X[:, 0] @ Y[p, 0]) for p in perms])
    observed = float(X[:, 0] @ Y[:, 0])
    expected = (1 + np.sum(null >= observed - abs(observed) * np.finfo(float).eps * 100)) / 200
    assert float(res.p_value) == pytest.approx(expected, abs=0)


def test_bootstrap_mean_ci_refuses_nan_instead_of_returning_nan_bounds() -> None:
    with pytest.raises(InputError, match=r"bootstrap_mean_ci: values has 1 NaN/Inf entries \(first at index "
                                         r"\(0, 2\)\)"):
        stats.bootstrap_mean_ci(torch.tensor([[1.0, 2.0, float("nan"), 4.0]]))
    # finite values: numpy's percentiles of the same resampled means
    values = gaussian(30, seed=4)
    low, high = stats.bootstrap_mean_ci(values, n_boot=500, seed=5)
    means = values.numpy()[stats.bootstrap_indices(30, 500, seed=5).numpy()].mean(1)
    assert_close(torch.stack([low, high]), torch.as_tensor(np.percentile(means, [2.5, 97.5]), dtype=torch.float64))


def test_bootstrap_ci_refuses_a_statistic_that_is_nan_on_some_resamples() -> None:
    def ratio(a: torch.Tensor) -> torch.Tensor:  # 0/0 on a resample that repeats one value only
        return a.mean() / a.std()

    with pytest.raises(InputError, match=r"bootstrap_ci: the statistic ratio on the 2000 resamples \(axis 0\) has \d+ "
                                         r"NaN/Inf entries"):
        stats.bootstrap_ci(ratio, torch.tensor([1.0, 1.0, 1.0, 1.0, 5.0]), seed=0)


def test_percentile_interval_refuses_nan_values() -> None:
    with pytest.raises(InputError, match="percentile_interval: values has 1 NaN/Inf entries"):
        stats.percentile_interval(torch.tensor([1.0, float("nan"), 3.0]), 0.1)


@pytest.mark.parametrize("scale", [1e-200, 1e200, 1e300])
def test_t_tests_and_effect_sizes_are_the_same_at_any_finite_scale(scale: float) -> None:
    # before: at 1e200 the variance overflowed and t came out 0 (p = 1), d_z 0, Hedges' g NaN
    a, b = gaussian(3, 9, seed=16), gaussian(3, 9, seed=17)
    ref = scipy.stats.ttest_rel(a.numpy(), b.numpy(), axis=-1)
    t = stats.paired_ttest(a * scale, b * scale)
    assert_close(t.statistic, torch.as_tensor(ref.statistic), rtol=1e-12, atol=0)
    assert_close(t.p_value, torch.as_tensor(ref.pvalue), rtol=1e-9, atol=0)
    assert_close(t.mean_difference, (a - b).mean(-1) * scale, rtol=1e-12, atol=0)
    assert_close(stats.cohens_d_paired(a * scale, b * scale), stats.cohens_d_paired(a, b), rtol=1e-12, atol=0)
    assert_close(stats.hedges_g(a * scale, b[:, :5] * scale), stats.hedges_g(a, b[:, :5]), rtol=1e-12, atol=0)


# -- item 9 --------------------------------------------------------------------------------------
def test_explicit_permutations_must_be_permutations() -> None:
    repeats = torch.zeros(5, 12, dtype=torch.long)  # before: accepted, p = 0.1667
    with pytest.raises(InputError, match=r"permutations row 0 is not a permutation of 0..11: it repeats rows"):
        stats.permutation_test(dot, X, Y, permutations=repeats)


@pytest.mark.parametrize("permutations, kind, message", [
    (torch.rand(5, 12), "pairings", r"kind='pairings' takes permutations as integer row orders .* got dtype "
                                    r"torch.float32; build them with permutation_indices\(12"),
    (torch.full((5, 12), 20), "pairings", r"permutations row 0 has indices outside 0..11 \(min 20, max 20; 5 such"),
    (torch.randint(0, 12, (5, 12)), "signs", r"kind='signs' takes permutations as bool flips .* got dtype torch.int64"),
])
def test_malformed_permutations_are_named_with_the_fix(permutations, kind, message) -> None:
    # before: IndexError / IndexError / RuntimeError from deep inside torch
    with pytest.raises(InputError, match=message):
        stats.permutation_test(dot, X, X[:, :1] if kind == "signs" else Y, kind=kind, permutations=permutations)


def test_valid_explicit_permutations_still_run_in_any_integer_dtype() -> None:
    perms = stats.permutation_indices(12, 99, seed=0)
    a = stats.permutation_test(dot, X, Y, permutations=perms)
    b = stats.permutation_test(dot, X, Y, permutations=perms.int())
    assert float(a.p_value) == float(b.p_value)


# -- unclear errors ------------------------------------------------------------------------------
def test_bootstrap_ci_vectorized_with_a_scalar_statistic_says_to_reduce_over_axis_1() -> None:
    # before: RuntimeError "zero-dimensional tensor (at position 0) cannot be concatenated"
    with pytest.raises(ShapeError, match=r"the statistic <lambda> got a block of 256 resamples .* returned shape \(\); "
                                         r"it must return one value per resample, shape \(256, \.\.\.\)"):
        stats.bootstrap_ci(lambda a: a.mean(), torch.arange(10.0), vectorized=True)
    low, high = stats.bootstrap_ci(lambda a: a.mean(1), torch.arange(10.0), vectorized=True, seed=0)
    means = np.arange(10.0)[stats.bootstrap_indices(10, 2000, seed=0).numpy()].mean(1)
    assert_close(torch.stack([low, high]), torch.as_tensor(np.percentile(means, [2.5, 97.5]), dtype=torch.float64))


def test_the_finiteness_check_is_shared() -> None:
    # one message for every entry point: the same check, not copies
    for call in (lambda: sim.cka(X, Y.clone().fill_(float("inf"))), lambda: geometry.pearson(X[:, 0] / 0, Y[:3, 0]),
                 lambda: geometry.shift_residual(X, X * float("nan"))):
        with pytest.raises(InputError, match=r"has \d+ NaN/Inf entries \(first at index \([0-9, ]*\)\): "):
            call()
    assert ti.stats._inputs.check_finite is ti.geometry._subspace.check_finite
