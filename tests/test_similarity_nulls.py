"""Vectorised permutation nulls equal the plain loop on the same permutations; p-values are
uniform under a true null and never 0; ``compare`` returns a typed, saveable result."""

import functools
import itertools

import numpy as np
import pytest
import scipy.spatial
import scipy.stats
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from tl_interp import similarity as sim
from tl_interp import stats
from tl_interp.errors import InputError, OptionError, TlInterpWarning
from tl_interp.results import Result
from tl_interp.similarity._kernels import _weighted_unbiased_hsic, cka_debiased_resampled
from tl_interp.similarity._neighbors import knn_resampled
from tl_interp.similarity._rsa import rsa_resampled


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def related(n, d1, d2, seed=0):
    x = randn(n, d1, seed=seed)
    return x, x @ randn(d1, d2, seed=seed + 1) + 2 * randn(n, d2, seed=seed + 2)


CASES = {  # (metric, options, shapes): shapes chosen to reach each batched path
    "cka linear, gram gather": (sim.cka, {}, (60, 60, 70)),
    "cka linear, cross-product": (sim.cka, {}, (30, 3, 4)),
    "cka linear, cross-product on factors (d > n)": (sim.cka, {}, (6, 20, 15)),
    "cka rbf": (sim.cka, {"kernel": "rbf", "threshold": 0.8}, (30, 5, 7)),
    "cka debiased": (sim.cka, {"debiased": True}, (30, 5, 7)),
    "cka debiased, cross-product on factors (d > n)": (sim.cka, {"debiased": True}, (6, 20, 15)),
    "cka debiased, Gram path": (sim.cka, {"debiased": True}, (60, 60, 70)),
    "svcca": (sim.svcca, {"keep": 0.9}, (40, 6, 5)),
    "svcca dims": (sim.svcca, {"dims": 3}, (40, 6, 5)),
    "pwcca x side": (sim.pwcca, {}, (40, 4, 6)),
    "pwcca y side": (sim.pwcca, {}, (40, 6, 4)),
    "procrustes": (sim.procrustes, {}, (30, 5, 5)),
    "procrustes wide": (sim.procrustes, {}, (10, 20, 30)),
    "rsa spearman correlation": (sim.rsa, {}, (25, 6, 7)),
    "rsa pearson euclidean": (sim.rsa, {"rdm": "euclidean", "compare": "pearson"}, (25, 6, 7)),
    "rsa spearman cosine": (sim.rsa, {"rdm": "cosine"}, (25, 6, 7)),
    "mutual knn": (sim.mutual_knn, {"k": 4}, (30, 5, 6)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_vectorised_null_equals_the_loop_on_the_same_permutations(case):
    metric, options, (n, d1, d2) = CASES[case]
    x, y = related(n, d1, d2, seed=len(case))
    perms = stats.permutation_indices(n, 64, seed=3)
    fast = stats.permutation_test(functools.partial(metric, **options), x, y, permutations=perms)
    loop = torch.tensor([metric(x, y[p], **options) for p in perms], dtype=torch.float64)
    assert fast.vectorized
    torch.testing.assert_close(fast.null, loop, rtol=1e-9, atol=1e-12)
    assert fast.statistic == pytest.approx(metric(x, y, **options), abs=1e-14)


class Work(TorchDispatchMode):
    """Counts the work of every tensor op run inside it: entries written, plus multiply-adds of
    matrix products (a deterministic cost model: no clocks)."""

    PRODUCTS = {torch.ops.aten.mm.default, torch.ops.aten.bmm.default, torch.ops.aten.addmm.default,
                torch.ops.aten.dot.default, torch.ops.aten.mv.default}

    def __init__(self):
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.total += sum(t.numel() for t in (out if isinstance(out, (tuple, list)) else [out])
                          if isinstance(t, torch.Tensor))
        if func in self.PRODUCTS:
            a, b = args[1:3] if func == torch.ops.aten.addmm.default else args[:2]
            self.total += a.numel() * (b.shape[-1] if b.ndim > 1 else 1)
        return out


def null_work_per_permutation(n, d1, d2, n_permutations=64):
    x, y = related(n, d1, d2)
    with Work() as work:
        res = stats.permutation_test(sim.cka, x, y, n_permutations=n_permutations)
    assert res.vectorized
    return work.total / n_permutations


def test_the_linear_cka_null_costs_whichever_of_the_two_exact_ways_is_cheaper():
    # narrow activations: reordering the n x n Gram matrix per permutation (>= n^2 entries) would
    # cost far more than one (d1, n) @ (n, d2) product; wide ones: the other way round
    n, d1, d2 = 300, 3, 4
    assert null_work_per_permutation(n, d1, d2) < n * n / 4, null_work_per_permutation(n, d1, d2)
    n, d1, d2 = 60, 60, 70
    assert null_work_per_permutation(n, d1, d2) < n * min(n, d1) * min(n, d2) / 4, null_work_per_permutation(n, d1, d2)


def test_kendall_rsa_has_no_batched_null_and_runs_the_loop():
    x, y = related(12, 3, 3)
    res = stats.permutation_test(functools.partial(sim.rsa, compare="kendall"), x, y, n_permutations=20)
    assert not res.vectorized
    loop = [sim.rsa(x, y[p], compare="kendall") for p in stats.permutation_indices(12, 20, seed=0)]
    torch.testing.assert_close(res.null, torch.tensor(loop, dtype=torch.float64))


def _null_p_values(metric, options):
    ps = []
    for seed in range(200):
        rng = np.random.default_rng(seed)  # independent X and Y: a true null
        x, y = rng.normal(size=(16, 4)), rng.normal(size=(16, 4))
        ps.append(float(stats.permutation_test(functools.partial(metric, **options), x, y,
                                               n_permutations=99, seed=seed).p_value))
    return np.array(ps)


@pytest.mark.parametrize("metric,options", [(sim.cka, {}), (sim.cka, {"debiased": True}), (sim.rsa, {}),
                                            (sim.procrustes, {}), (sim.svcca, {"dims": 2})])
def test_p_values_are_uniform_under_a_true_null_and_never_zero(metric, options):
    ps = _null_p_values(metric, options)
    assert ps.min() >= 0.01  # never 0: at least 1 / (B + 1)
    assert scipy.stats.kstest(ps, "uniform").pvalue > 0.01


def test_mutual_knn_p_values_are_valid_under_a_true_null():
    # the overlap takes few values (ties with the null), so its p-values are conservative, not uniform
    ps = _null_p_values(sim.mutual_knn, {"k": 3})
    assert ps.min() >= 0.01
    for alpha in (0.05, 0.1, 0.25, 0.5):
        assert np.mean(ps <= alpha) <= alpha + 2 * np.sqrt(alpha * (1 - alpha) / 200)


# -- compare --------------------------------------------------------------------------------
X, Y = related(40, 6, 8, seed=20)


@pytest.fixture(scope="module")
def result():
    return sim.compare(X, Y, measures=("cka", "svcca", "procrustes", "rsa", "mutual_knn", "cka_debiased"),
                       options={"mutual_knn": {"k": 5}}, n_permutations=199, n_boot=100, seed=7, model_id="toy")


def numpy_linear_cka(x, y):
    """Reference: linear CKA = ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F) (Kornblith et al. 2019)."""
    x, y = np.asarray(x), np.asarray(y)
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def scipy_procrustes_similarity(x, y):
    """Reference: scipy's disparity is 1 - similarity^2 (widths padded with zeros to match)."""
    x, y = np.asarray(x), np.asarray(y)
    width = max(x.shape[1], y.shape[1])
    pad = lambda a: np.pad(a, ((0, 0), (0, width - a.shape[1])))  # noqa: E731
    return float(np.sqrt(1 - scipy.spatial.procrustes(pad(x), pad(y))[2]))


def test_compare_scores_nulls_and_p_values_equal_numpy_references(result):
    # independent of the toolkit's metric and null code: numpy CKA on each of the seed's
    # permutations (the public permutation_indices gives them), the p-value counted by hand
    assert result.labels["metric"] == ("cka", "svcca", "procrustes", "rsa", "mutual_knn", "cka_debiased")
    assert float(result.values[0]) == pytest.approx(numpy_linear_cka(X, Y), rel=1e-12)
    assert float(result.values[2]) == pytest.approx(scipy_procrustes_similarity(X, Y), rel=1e-9)
    perms = stats.permutation_indices(40, 199, seed=7).numpy()
    null = np.array([numpy_linear_cka(X, Y.numpy()[p]) for p in perms])
    np.testing.assert_allclose(result.extras["null"][0].numpy(), null, rtol=1e-9)
    assert float(result.extras["p_value"][0]) == pytest.approx((1 + np.sum(null >= numpy_linear_cka(X, Y))) / 200)
    assert result.extras["null"].shape == (6, 199)


def test_compare_reports_intervals_chance_and_provenance(result):
    low, high = result.extras["ci_low"], result.extras["ci_high"]
    assert torch.all(low <= high)
    assert torch.all((low <= result.values + 0.05) & (result.values - 0.05 <= high))
    chance = result.extras["chance"]
    assert chance[4] == pytest.approx(5 / 39) and torch.isnan(chance[:4]).all()
    assert torch.all(result.extras["p_value"] >= 1 / 200)
    assert result.provenance.seed == 7 and result.provenance.settings["n_permutations"] == 199
    assert "cka:" in result.summary() and result.score("rsa")["p_value"] == float(result.extras["p_value"][3])


def test_compare_bootstrap_is_the_percentile_interval_of_the_metric_on_resampled_rows(result):
    # reference: scipy's Procrustes on each of the seed's resamples of rows (public bootstrap_indices),
    # and numpy's linearly interpolated 2.5% and 97.5% quantiles
    x, y = X.numpy(), Y.numpy()
    scores = [scipy_procrustes_similarity(x[i], y[i]) for i in stats.bootstrap_indices(40, 100, seed=7).numpy()]
    low, high = np.quantile(scores, [0.025, 0.975])
    assert float(result.extras["ci_low"][2]) == pytest.approx(low, abs=1e-9)
    assert float(result.extras["ci_high"][2]) == pytest.approx(high, abs=1e-9)


def test_resampled_rsa_and_knn_leave_out_copies_and_equal_the_metric_without_copies():
    rows = torch.arange(40)
    assert rsa_resampled(X, Y, rows) == pytest.approx(sim.rsa(X, Y), abs=1e-12)
    assert knn_resampled(X, Y, rows, k=5) == sim.mutual_knn(X, Y, k=5)
    twice = torch.cat([rows, rows])
    # every item twice: copies are neither pairs nor neighbours, so the score is the same
    assert rsa_resampled(X[twice], Y[twice], twice) == pytest.approx(sim.rsa(X, Y), abs=0.05)


def test_compare_result_saves_loads_and_draws(result, tmp_path):
    path = result.save(tmp_path / "sim.safetensors")
    back = Result.load(path)
    assert type(back) is sim.SimilarityResult and back.labels == result.labels
    torch.testing.assert_close(back.extras["null"], result.extras["null"])
    fig = back.figure()
    assert [d.type for d in fig.data].count("histogram") == 6


def test_compare_checks_everything_before_the_long_work():
    with pytest.raises(OptionError, match=r"unknown measures \['cca'\]; choose from"):
        sim.compare(X, Y, measures=("cca",))
    with pytest.raises(InputError, match="svcca: X keeps 6 and Y keeps 8 dimensions but there are only 12 rows"):
        sim.compare(X[:12], Y[:12], measures=("cka", "svcca"), options={"svcca": {"keep": 1.0}})
    with pytest.raises(OptionError, match="n_permutations must be an int >= 1, got 0"):
        sim.compare(X, Y, n_permutations=0)


def test_compare_warns_when_a_biased_metric_falls_outside_its_bootstrap_interval():
    x, y = randn(20, 40, seed=30), randn(20, 40, seed=31)  # unrelated, few rows: CKA is biased upwards
    with pytest.warns(TlInterpWarning, match=r"bootstrap interval of cka \[0\.\d+, 0\.\d+\] does not contain its score "
                                           r"0\.\d+ \(resampled scores are shifted by \+0\.\d+ on average\): cka is "
                                           r"biased at n=20 rows"):
        res = sim.compare(x, y, measures=("cka", "cka_debiased"), n_permutations=50, n_boot=100)
    assert res.score("cka")["boot_bias"] > 0.05
    debiased = res.score("cka_debiased")  # resampled as counts over distinct items: no such shift
    assert debiased["ci_low"] < debiased["score"] < debiased["ci_high"] and abs(debiased["boot_bias"]) < 0.05


def test_weighted_unbiased_hsic_is_the_u_statistic_over_distinct_items():
    k, l = randn(6, 3, seed=32), randn(6, 4, seed=33)
    k, l = k @ k.T, l @ l.T
    w = torch.tensor([1.0, 3, 2, 1, 4, 2], dtype=torch.float64)

    def mean_over_distinct(fn, order):
        tuples = list(itertools.permutations(range(6), order))
        weights = torch.tensor([float(torch.prod(w[list(t)])) for t in tuples], dtype=torch.float64)
        return float((weights * torch.tensor([float(fn(*t)) for t in tuples], dtype=torch.float64)).sum()
                     / weights.sum())

    brute = (mean_over_distinct(lambda i, j: k[i, j] * l[i, j], 2)
             + mean_over_distinct(lambda i, j, q, r: k[i, j] * l[q, r], 4)
             - 2 * mean_over_distinct(lambda i, j, q: k[i, j] * l[i, q], 3))
    assert float(_weighted_unbiased_hsic(k, l, w)) == pytest.approx(brute, rel=1e-10)


def test_resampled_debiased_cka_reads_copies_as_weights():
    x, y = related(15, 4, 5, seed=34)
    assert cka_debiased_resampled(x, y, torch.arange(15)) == pytest.approx(sim.cka(x, y, debiased=True), abs=1e-12)
    rows = torch.tensor([0, 0, 3, 5, 5, 5, 7, 9, 9, 11, 12, 12, 14, 14, 1])
    ours = cka_debiased_resampled(x[rows], y[rows], rows)
    # a resample of all 15 rows twice over weights every item alike: the plain estimate again
    twice = torch.cat([torch.arange(15)] * 2)
    assert cka_debiased_resampled(x[twice], y[twice], twice) == pytest.approx(sim.cka(x, y, debiased=True), abs=1e-12)
    assert -1 <= ours <= 1



def test_compare_does_not_warn_when_a_perfect_score_meets_its_interval_up_to_rounding():
    # Two codebooks that are the same features in another order: RSA is 1 on every resample, up to
    # the order of the sums (1.0 vs 1.0000000000000002). Before the tolerance, 6 of these 20 seeds
    # warned that the interval [1.000, 1.000] did not contain the score 1.000.
    import warnings
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        codes, dec = torch.relu(torch.randn(120, 12, generator=g)), torch.randn(12, 6, generator=g)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            sim.feature_spaces(codes, codes.flip(1), dec, dec.flip(0), n_permutations=20, n_boot=4)
        assert not [w for w in caught if "does not contain its score" in str(w.message)], seed
