"""Vectorised permutation nulls equal the plain loop on the same permutations; p-values are
uniform under a true null and never 0; ``compare`` returns a typed, saveable result."""

import functools

import numpy as np
import pytest
import scipy.stats
import torch

from tl_interp import similarity as sim
from tl_interp import stats
from tl_interp.errors import InputError, OptionError
from tl_interp.results import Result
from tl_interp.similarity._kernels import _cka_null
from tl_interp.similarity._neighbors import knn_resampled
from tl_interp.similarity._rsa import rsa_resampled


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def related(n, d1, d2, seed=0):
    x = randn(n, d1, seed=seed)
    return x, x @ randn(d1, d2, seed=seed + 1) + 2 * randn(n, d2, seed=seed + 2)


CASES = {  # (metric, options, shapes): shapes chosen to reach each batched path
    "cka linear, gram gather": (sim.cka, {}, (30, 20, 25)),
    "cka linear, cross-product": (sim.cka, {}, (30, 3, 4)),
    "cka linear, cross-product on factors (d > n)": (sim.cka, {}, (6, 20, 15)),
    "cka rbf": (sim.cka, {"kernel": "rbf", "threshold": 0.8}, (30, 5, 7)),
    "cka debiased": (sim.cka, {"debiased": True}, (30, 5, 7)),
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


def test_cka_takes_the_cross_product_path_only_when_it_is_cheaper():
    x, y = related(30, 3, 4)
    assert _cka_null(x, y).evaluate.__name__ == "_cross_product"
    x, y = related(30, 20, 25)
    assert type(_cka_null(x, y).evaluate).__name__ == "PairGather"


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
    return sim.compare(X, Y, metrics=("cka", "svcca", "procrustes", "rsa", "mutual_knn", "cka_debiased"),
                       options={"mutual_knn": {"k": 5}}, n_permutations=199, n_boot=100, seed=7, model_id="toy")


def test_compare_scores_are_the_metrics_and_nulls_are_the_permutation_tests(result):
    assert result.labels["metric"] == ("cka", "svcca", "procrustes", "rsa", "mutual_knn", "cka_debiased")
    assert float(result.values[0]) == sim.cka(X, Y)
    assert float(result.values[4]) == sim.mutual_knn(X, Y, k=5)
    ref = stats.permutation_test(sim.cka, X, Y, n_permutations=199, seed=7)
    torch.testing.assert_close(result.extras["null"][0], ref.null)
    assert float(result.extras["p_value"][0]) == float(ref.p_value)
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


def test_compare_bootstrap_equals_stats_bootstrap_for_a_plain_metric(result):
    low, high = stats.bootstrap_ci(sim.procrustes, X, Y, n_boot=100, seed=7)
    assert float(result.extras["ci_low"][2]) == pytest.approx(float(low), abs=1e-12)
    assert float(result.extras["ci_high"][2]) == pytest.approx(float(high), abs=1e-12)


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
    with pytest.raises(OptionError, match=r"unknown metrics \['cca'\]; choose from"):
        sim.compare(X, Y, metrics=("cca",))
    with pytest.raises(InputError, match="svcca: X keeps 6 and Y keeps 8 dimensions but there are only 12 rows"):
        sim.compare(X[:12], Y[:12], metrics=("cka", "svcca"), options={"svcca": {"keep": 1.0}})
    with pytest.raises(OptionError, match="n_permutations must be an int >= 1, got 0"):
        sim.compare(X, Y, n_permutations=0)
