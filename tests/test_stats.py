"""ti.stats agrees with scipy and statsmodels where they have the same test, and refuses bad input."""

import functools
import warnings

import numpy as np
import pytest
import scipy.stats
import torch
from statsmodels.stats.multitest import multipletests

from tl_interp import stats
from tl_interp.errors import InputError, OptionError, ShapeError, TlInterpWarning
from tl_interp.stats import bootstrap_mean_ci


def _rng(seed=0):
    return np.random.default_rng(seed)


# -- paired t-test and effect sizes ---------------------------------------------------------
@pytest.mark.parametrize("alternative", ["two-sided", "greater", "less"])
def test_paired_ttest_equals_scipy_ttest_rel_over_leading_axes(alternative):
    a = _rng(0).normal(size=(3, 4, 9))
    b = a + _rng(1).normal(0.3, 1.0, size=(3, 4, 9))
    ours = stats.paired_ttest(a, b, alternative=alternative)
    ref = scipy.stats.ttest_rel(a, b, axis=-1, alternative=alternative)
    torch.testing.assert_close(ours.statistic, torch.as_tensor(ref.statistic), rtol=1e-12, atol=0)
    torch.testing.assert_close(ours.p_value, torch.as_tensor(ref.pvalue), rtol=1e-10, atol=1e-15)
    assert ours.statistic.shape == (3, 4) and ours.statistic.dtype == torch.float64
    assert torch.all(ours.df == 8)
    torch.testing.assert_close(ours.cohens_d, ours.statistic / 3.0)


def test_paired_ttest_accepts_torch_float32_and_numpy_alike():
    a = _rng(2).normal(size=12)
    b = _rng(3).normal(size=12)
    ours = stats.paired_ttest(torch.tensor(a, dtype=torch.float32), torch.tensor(b, dtype=torch.float32))
    ref = scipy.stats.ttest_rel(np.float32(a).astype(np.float64), np.float32(b).astype(np.float64))
    assert abs(float(ours.p_value) - ref.pvalue) < 1e-12


@pytest.mark.filterwarnings("ignore:Precision loss occurred")
def test_paired_ttest_refuses_constant_differences_where_scipy_gives_inf_or_nan():
    # issue 19 item 3: scipy answers t = inf, p = 0 (a "perfect" effect) and t = NaN, p = NaN; neither is a test
    a = np.arange(5.0)
    with np.errstate(all="ignore"):
        assert scipy.stats.ttest_rel(a + 1.0, a).pvalue == 0 and np.isnan(scipy.stats.ttest_rel(a, a).pvalue)
    with pytest.raises(InputError, match=r"no variation in 1 of 1 tests \(first at index \(\): all 1 \(t = \+inf"):
        stats.paired_ttest(a + 1.0, a)
    with pytest.raises(InputError, match=r"first at index \(1,\): all zero \(x and y are equal there: t = 0/0\)"):
        stats.paired_ttest(np.stack([a * a, a]), np.stack([a, a]))


def test_paired_ttest_refuses_too_few_pairs_nan_and_mismatched_shapes():
    with pytest.raises(InputError, match="at least 3 pairs on the last axis, got 2"):
        stats.paired_ttest(np.ones(2), np.zeros(2))
    with pytest.raises(InputError, match=r"x has 1 NaN/Inf entries \(first at index \(3,\)\)"):
        stats.paired_ttest(np.array([1.0, 2, 3, np.nan]), np.zeros(4))
    with pytest.raises(ShapeError, match=r"shapes \(4,\) and \(5,\)"):
        stats.paired_ttest(np.ones(4), np.ones(5))
    with pytest.raises(OptionError, match="alternative='bigger' is not one of"):
        stats.paired_ttest(np.ones(4), np.zeros(4), alternative="bigger")


def test_cohens_d_paired_is_t_over_root_n():
    a, b = _rng(4).normal(size=(2, 15))
    ref = scipy.stats.ttest_rel(a, b).statistic / np.sqrt(15)
    assert abs(float(stats.cohens_d_paired(a, b)) - ref) < 1e-12


def test_hedges_g_is_corrected_independent_t_effect_size():
    a, b = _rng(5).normal(size=11) + 0.8, _rng(6).normal(size=7)
    m = 11 + 7 - 2
    d = scipy.stats.ttest_ind(a, b).statistic * np.sqrt(1 / 11 + 1 / 7)  # pooled-sd Cohen's d
    g = float(stats.hedges_g(a, b))
    j = g / d
    # exact J(m) (Hedges 1981) and its classic approximation 1 - 3 / (4m - 1) agree to O(1/m^2)
    assert abs(j - (1 - 3 / (4 * m - 1))) < 2e-4
    # Hedges & Olkin (1985), table 2: J(10) = 0.9227
    j10 = float(stats.hedges_g(np.array([1.0, 2, 3, 4, 5, 7]), np.array([0.0, 1, 2, 3, 4, 5])))
    d10 = scipy.stats.ttest_ind([1.0, 2, 3, 4, 5, 7], [0.0, 1, 2, 3, 4, 5]).statistic * np.sqrt(1 / 3)
    assert abs(j10 / d10 - 0.9227) < 1e-4


# -- multiple comparisons -------------------------------------------------------------------
@pytest.mark.parametrize("method", ["bonferroni", "holm", "fdr_bh"])
def test_correct_equals_statsmodels_multipletests(method):
    p = _rng(7).uniform(0, 0.2, size=(4, 6)) ** 2
    p[0, 0] = p[1, 1]  # a tie
    ours = stats.correct(p, method)
    ref = multipletests(p.ravel(), method=method)[1].reshape(p.shape)
    torch.testing.assert_close(ours, torch.as_tensor(ref), rtol=1e-12, atol=0)


def test_correct_fdr_bh_equals_scipy_false_discovery_control():
    p = _rng(8).uniform(size=30) ** 3
    torch.testing.assert_close(stats.correct(p, "fdr_bh"),
                               torch.as_tensor(scipy.stats.false_discovery_control(p, method="bh")))


def test_correct_refuses_values_outside_unit_interval_and_unknown_methods():
    with pytest.raises(InputError, match="p_values must lie in \\[0, 1\\], got min -0.1"):
        stats.correct([-0.1, 0.5])
    with pytest.raises(OptionError, match="method='bh' is not one of"):
        stats.correct([0.1], "bh")



@pytest.mark.parametrize("method", ["bonferroni", "holm"])
def test_correct_warns_when_permutation_p_values_are_too_coarse_for_the_family(method):
    # 300 tests at the floor of 999 permutations: 300 / 1000 = 0.3, so none can ever pass 0.05
    floor = [1 / 1000] * 300
    with pytest.warns(TlInterpWarning, match=rf"{method} over 300 permutation p-values with 999 permutations can't go "
                                             r"below 300 / 1000 = 0.3 > alpha 0.05: no test can pass, whatever the "
                                             r"data. Use at least 5999 permutations"):
        adjusted = stats.correct(floor, method, n_permutations=999)
    assert float(adjusted.min()) == pytest.approx(0.3)
    # the suggested count is enough: every test at its floor now passes
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bool((stats.correct([1 / 6000] * 300, method, n_permutations=5999) <= 0.05).all())
    with pytest.raises(InputError, match="n_permutations must be >= 1 and alpha in \\(0, 1\\), got 0 and 0.05"):
        stats.correct([0.1], method, n_permutations=0)


def test_correct_does_not_warn_for_fdr_bh_whose_floor_is_not_multiplied_by_m():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adjusted = stats.correct([1 / 1000] * 300, "fdr_bh", n_permutations=999)
    assert float(adjusted.max()) == pytest.approx(1 / 1000)

# -- bootstrap -----------------------------------------------------------------------------
def test_bootstrap_mean_ci_keeps_its_import_path_and_matches_the_generic_bootstrap():
    x = torch.tensor(_rng(9).normal(size=40))
    low, high = bootstrap_mean_ci(x, n_boot=500, seed=3)
    g_low, g_high = stats.bootstrap_ci(lambda v: v.mean(), x, n_boot=500, seed=3)
    torch.testing.assert_close((low, high), (g_low, g_high))
    v_low, v_high = stats.bootstrap_ci(lambda v: v.mean(-1), x, n_boot=500, seed=3, vectorized=True)
    torch.testing.assert_close((low, high), (v_low, v_high))


def test_bootstrap_ci_agrees_with_scipy_percentile_bootstrap_up_to_monte_carlo_error():
    x = _rng(10).exponential(size=60)
    low, high = stats.bootstrap_ci(lambda v: v.mean(-1), x, n_boot=20000, seed=0, vectorized=True)
    ref = scipy.stats.bootstrap((x,), np.mean, n_resamples=20000, method="percentile", rng=_rng(1))
    se = x.std() / np.sqrt(60)
    assert abs(float(low) - ref.confidence_interval.low) < 0.05 * se
    assert abs(float(high) - ref.confidence_interval.high) < 0.05 * se


def test_bootstrap_ci_resamples_paired_rows_together():
    x = torch.arange(30.0)
    low, high = stats.bootstrap_ci(lambda a, b: (a - b).abs().max(), x, x.clone(), n_boot=200)
    assert float(low) == float(high) == 0.0  # a and b always get the same rows


def test_bootstrap_refuses_mismatched_rows_and_bad_options():
    with pytest.raises(ShapeError, match=r"the samples have \[5, 4\] rows"):
        stats.bootstrap_ci(lambda a, b: a.mean(), np.ones(5), np.ones(4))
    with pytest.raises(OptionError, match="n_boot must be an int >= 1, got 0"):
        stats.bootstrap_ci(lambda a: a.mean(), np.ones(5), n_boot=0)
    with pytest.raises(OptionError, match="alpha must be in \\(0, 1\\), got 1.5"):
        bootstrap_mean_ci(torch.ones(5), alpha=1.5)


# -- permutation tests: the same permutations as scipy give the same null and p-value --------
def _captured(data, permutation_type, n, seed):
    """The permutations scipy.stats.permutation_test draws for this seed, read back through a statistic."""
    seen = []

    def record(*batch, axis):
        if batch[0].ndim == 1:  # the observed statistic
            return np.float64(0.0)
        seen.append(np.concatenate(batch, axis=-1) if permutation_type != "pairings" else batch[0])
        return np.zeros(batch[0].shape[0])

    scipy.stats.permutation_test(data, record, permutation_type=permutation_type, vectorized=True,
                                 n_resamples=n, rng=np.random.default_rng(seed))
    return np.concatenate(seen)


@pytest.mark.parametrize("alternative", ["greater", "less", "two-sided"])
def test_pairings_test_equals_scipy_on_the_same_permutations(alternative):
    x = _rng(11).normal(size=10)
    y = 0.4 * x + _rng(12).normal(size=10)
    perms = torch.as_tensor(_captured((np.arange(10),), "pairings", 300, seed=5))

    def corr_np(b, axis):
        return np.array([np.corrcoef(x, row)[0, 1] for row in np.atleast_2d(b)]).squeeze()

    ref = scipy.stats.permutation_test((y,), corr_np, permutation_type="pairings", vectorized=True,
                                       n_resamples=300, alternative=alternative, rng=np.random.default_rng(5))
    ours = stats.permutation_test(lambda a, b: torch.corrcoef(torch.stack([a, b]))[0, 1], x, y,
                                  permutations=perms, alternative=alternative)
    torch.testing.assert_close(ours.null, torch.as_tensor(ref.null_distribution))
    assert float(ours.p_value) == pytest.approx(ref.pvalue, abs=1e-12)
    assert ours.seed is None and ours.n_permutations == 300 and not ours.vectorized


def test_labels_test_equals_scipy_independent_on_the_same_permutations():
    x, y = _rng(13).normal(0.5, 1, size=8), _rng(14).normal(size=11)
    perms = torch.as_tensor(_captured((np.arange(8.0), np.arange(8.0, 19.0)), "independent", 400, seed=2)).long()

    def diff(a, b, axis=-1):
        return a.mean(axis) - b.mean(axis)

    ref = scipy.stats.permutation_test((x, y), diff, permutation_type="independent", vectorized=True,
                                       n_resamples=400, alternative="greater", rng=np.random.default_rng(2))
    ours = stats.permutation_test(diff, x, y, kind="labels", permutations=perms)
    torch.testing.assert_close(ours.null, torch.as_tensor(ref.null_distribution))
    assert float(ours.p_value) == pytest.approx(ref.pvalue, abs=1e-12)


@pytest.mark.parametrize("two_sample", [True, False])
def test_signs_test_equals_scipy_samples_on_the_same_permutations(two_sample):
    a, b = _rng(15).normal(0.3, 1, size=9), _rng(16).normal(size=9)
    if two_sample:
        flips = _captured((np.zeros(9), np.ones(9)), "samples", 200, seed=4)[:, :9] == 1
        ref = scipy.stats.permutation_test((a, b), lambda u, v, axis: (u - v).mean(axis), permutation_type="samples",
                                           vectorized=True, n_resamples=200, alternative="greater",
                                           rng=np.random.default_rng(4))
        ours = stats.permutation_test(lambda u, v: (u - v).mean(), a, b, kind="signs", permutations=torch.as_tensor(flips))
    else:
        flips = _captured((np.ones(9),), "samples", 200, seed=4) == -1
        ref = scipy.stats.permutation_test((a,), lambda u, axis: u.mean(axis), permutation_type="samples",
                                           vectorized=True, n_resamples=200, alternative="greater",
                                           rng=np.random.default_rng(4))
        ours = stats.permutation_test(lambda u: u.mean(), a, kind="signs", permutations=torch.as_tensor(flips))
    torch.testing.assert_close(ours.null, torch.as_tensor(ref.null_distribution))
    assert float(ours.p_value) == pytest.approx(ref.pvalue, abs=1e-12)


def test_permutation_p_value_is_never_zero_and_counts_the_observed_arrangement():
    x = torch.arange(20.0)
    res = stats.permutation_test(lambda a, b: (a * b).sum(), x, x, n_permutations=99, seed=1)
    assert float(res.p_value) == 0.01  # (1 + 0) / (99 + 1)
    assert res.null.shape == (99,) and res.statistic.ndim == 0 and res.seed == 1


def test_permutation_indices_do_not_depend_on_how_many_are_drawn():
    few, many = stats.permutation_indices(7, 5, seed=3), stats.permutation_indices(7, 3000, seed=3)
    assert torch.equal(few, many[:5])
    assert torch.equal(many[1500].sort().values, torch.arange(7))


def test_a_partial_of_an_unregistered_statistic_runs_the_loop():
    x = torch.arange(6.0)
    f = functools.partial(lambda a, b, w: w * (a * b).sum(), w=2.0)
    assert not stats.permutation_test(f, x, x, n_permutations=10).vectorized


def test_permutation_test_refuses_bad_requests_with_the_numbers():
    x = np.ones(5)
    with pytest.raises(InputError, match="kind='pairings' needs a second sample y"):
        stats.permutation_test(lambda a: a.sum(), x)
    with pytest.raises(ShapeError, match="x has 5 rows, y has 4"):
        stats.permutation_test(lambda a, b: a.sum(), x, np.ones(4))
    with pytest.raises(OptionError, match="n_permutations must be an int >= 1, got 0"):
        stats.permutation_test(lambda a, b: a.sum(), x, x, n_permutations=0)
    with pytest.raises(OptionError, match="kind='rows' is not one of"):
        stats.permutation_test(lambda a, b: a.sum(), x, x, kind="rows")
    with pytest.raises(InputError, match=r"must return one number, it returned shape \(5,\)"):
        stats.permutation_test(lambda a, b: a * b, x, x, n_permutations=3)
    with pytest.raises(ShapeError, match=r"permutations must have shape \(n_permutations, 5\), got \(3, 4\)"):
        stats.permutation_test(lambda a, b: a.sum(), x, x, permutations=torch.zeros(3, 4, dtype=torch.long))
