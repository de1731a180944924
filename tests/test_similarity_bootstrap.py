"""Batched bootstraps equal one metric call per resample, on the same resamples; resamples the
batched form can't certify go through that loop; ``compare`` announces long work and keeps its
values whatever its memory budget. References: the metric on ``X[rows]`` (the loop), numpy's
bincount and percentile, scipy's pdist and spearmanr, Kornblith et al.'s numpy CKA."""

import functools
import re

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
import torch

from tl_interp import similarity as sim
from tl_interp import stats
from tl_interp.errors import InputError, OptionError
from tl_interp.similarity import _compare, _schedule
from tl_interp.similarity._neighbors import knn_resampled
from tl_interp.similarity._rsa import rsa_resampled
from tl_interp.stats._bootstrap import bootstrap_evaluator, resample_counts


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def related(n, d1, d2, seed=0):
    x = randn(n, d1, seed=seed)
    return x, x @ randn(d1, d2, seed=seed + 1) + 2 * randn(n, d2, seed=seed + 2)


def integer_valued(n, d1, d2, seed=0):  # euclidean RDMs full of exact ties
    x, y = related(n, d1, d2, seed)
    return x.round(), y.round()


CASES = {  # name: (loop form, takes source rows, options, data)
    "cka linear, gram products": (sim.cka, False, {}, related(40, 12, 14)),
    "cka linear, feature products (n >> d)": (sim.cka, False, {}, related(40, 3, 4)),
    "cka linear, d > n (factors)": (sim.cka, False, {}, related(12, 20, 15)),
    "cka rbf": (sim.cka, False, {"kernel": "rbf"}, related(40, 5, 6)),
    "cka rbf, threshold 1, d > n": (sim.cka, False, {"kernel": "rbf", "threshold": 1.0}, related(12, 20, 15)),
    "procrustes": (sim.procrustes, False, {}, related(40, 6, 8)),
    "procrustes, d > n": (sim.procrustes, False, {}, related(12, 20, 15)),
    "svcca keep": (sim.svcca, False, {"keep": 0.9}, related(40, 6, 5)),
    "svcca default keep": (sim.svcca, False, {}, related(60, 8, 7)),
    "svcca dims": (sim.svcca, False, {"dims": 3}, related(40, 6, 5)),
    "svcca keep=1": (sim.svcca, False, {"keep": 1.0}, related(40, 4, 5)),
    "svcca, d > n (factors)": (sim.svcca, False, {"dims": 4}, related(16, 20, 15)),
    "pwcca": (sim.pwcca, False, {}, related(40, 6, 5)),
    "pwcca, Y has fewer units": (sim.pwcca, False, {}, related(40, 5, 3)),
    "pwcca, equal widths": (sim.pwcca, False, {}, related(50, 4, 4)),
    "pwcca, d > n of low rank": (sim.pwcca, False, {}, (randn(30, 3, seed=1) @ randn(3, 40, seed=2),
                                                        randn(30, 4, seed=3) @ randn(4, 6, seed=4))),
    "pwcca, X low rank and narrower": (sim.pwcca, False, {}, (randn(30, 3, seed=1) @ randn(3, 6, seed=2),
                                                              randn(30, 4, seed=3) @ randn(4, 40, seed=4))),
    "rsa spearman correlation": (rsa_resampled, True, {}, related(25, 6, 7)),
    "rsa spearman cosine": (rsa_resampled, True, {"rdm": "cosine"}, related(25, 6, 7)),
    "rsa spearman euclidean with ties": (rsa_resampled, True, {"rdm": "euclidean"}, integer_valued(20, 3, 2)),
    "rsa pearson euclidean": (rsa_resampled, True, {"rdm": "euclidean", "compare": "pearson"}, related(25, 6, 7)),
    "rsa kendall correlation": (rsa_resampled, True, {"compare": "kendall"}, related(25, 6, 7)),
    "rsa kendall euclidean with ties": (rsa_resampled, True, {"rdm": "euclidean", "compare": "kendall"},
                                        integer_valued(20, 3, 2)),
    "mutual knn": (knn_resampled, True, {"k": 4}, related(30, 5, 6)),
    "mutual knn, k near n": (knn_resampled, True, {"k": 7}, related(12, 3, 4)),
}


def loop_values(form, takes_source, options, x, y, index):
    f = functools.partial(form, **options)
    return torch.tensor([f(x[r], y[r], r) if takes_source else f(x[r], y[r]) for r in index], dtype=torch.float64)


def counting(form, takes_source, options, x, y):
    """The evaluator with its loop fallback counted."""
    calls = []
    f = functools.partial(form, **options)

    def one(b, rows):
        calls.append(b)
        return f(x[rows], y[rows], rows) if takes_source else f(x[rows], y[rows])

    evaluate, block = bootstrap_evaluator(f, x, y, one=one)
    return evaluate, block, calls


@pytest.mark.parametrize("case", list(CASES))
def test_batched_bootstrap_equals_the_loop_on_the_same_resamples(case):
    form, takes_source, options, (x, y) = CASES[case]
    index = stats.bootstrap_indices(x.shape[0], 150, seed=len(case))
    evaluate, _, calls = counting(form, takes_source, options, x, y)
    fast = evaluate(index, 0)
    assert len(calls) < 15  # the batched form did the work (a few degenerate resamples may take the loop)
    loop = loop_values(form, takes_source, options, x, y, index)
    if form is knn_resampled:
        assert torch.equal(fast, loop)  # counts of shared neighbours: exact
    else:
        torch.testing.assert_close(fast, loop, rtol=1e-9, atol=1e-12)


def test_cka_takes_the_feature_products_only_when_they_are_cheaper():
    from tl_interp.similarity._resample_kernels import _cka_bootstrap
    assert _cka_bootstrap(*related(40, 3, 4)).evaluate.__name__ == "_cka_features"
    assert _cka_bootstrap(*related(40, 12, 14)).evaluate.__name__ == "_cka_resampled"


def test_the_block_size_does_not_change_the_values():
    index = stats.bootstrap_indices(30, 64, seed=0)
    for form, options, (x, y) in ((sim.cka, {}, related(30, 5, 6, seed=3)), (sim.cka, {}, related(30, 12, 14, seed=3)),
                                  (sim.procrustes, {}, related(30, 5, 6, seed=3)),
                                  (rsa_resampled, {}, related(30, 5, 6, seed=3)),
                                  (knn_resampled, {"k": 3}, related(30, 5, 6, seed=3))):
        f = functools.partial(form, **options)
        one = (lambda b, r, f=f: f(x[r], y[r], r)) if form in (rsa_resampled, knn_resampled) else None
        big, block = bootstrap_evaluator(f, x, y, one=one, memory_mb=1024.0)
        small, tiny_block = bootstrap_evaluator(f, x, y, one=one, memory_mb=1e-3)
        assert tiny_block == 1 and block >= 64
        whole = big(index, 0)
        torch.testing.assert_close(torch.cat([small(index[i:i + 1], i) for i in range(64)]), whole, rtol=1e-12,
                                   atol=1e-14)


def test_resamples_the_batched_form_cannot_certify_take_the_loop_and_raise_as_it_does():
    x, y = related(20, 4, 5, seed=4)
    index = stats.bootstrap_indices(20, 6, seed=0)
    index[2] = 7  # one item copied 20 times: no variation
    evaluate, _, calls = counting(sim.procrustes, False, {}, x, y)
    with pytest.raises(InputError, match="every row of X is the same"):
        evaluate(index, 0)
    assert calls == [2]
    # rank-deficient data with keep=1.0: the kept rank is not certain from the covariances, so every
    # resample takes the loop, and the values are the loop's
    low_rank = x[:, :2] @ randn(2, 6, seed=5)
    evaluate, _, calls = counting(sim.svcca, False, {"keep": 1.0}, low_rank, y)
    index = stats.bootstrap_indices(20, 5, seed=1)
    torch.testing.assert_close(evaluate(index, 0), loop_values(sim.svcca, False, {"keep": 1.0}, low_rank, y, index))
    assert calls == [0, 1, 2, 3, 4]


def test_an_item_with_too_few_other_rows_sends_mutual_knn_to_the_loop():
    x, y = related(12, 3, 4, seed=6)
    index = stats.bootstrap_indices(12, 4, seed=0)
    index[1, :4] = 5  # item 5 five times or more: 12 - 5 < k + 1 other rows
    index[1, 4:8] = 5
    evaluate, _, calls = counting(knn_resampled, True, {"k": 6}, x, y)
    values = evaluate(index, 0)
    assert calls == [1]
    assert torch.equal(values, loop_values(knn_resampled, True, {"k": 6}, x, y, index))


def numpy_linear_cka(x, y):  # Kornblith et al.'s feature-space form
    x, y = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def numpy_rsa_without_copies(x, y, rows):
    i, j = np.triu_indices(len(rows), 1)
    keep = rows[i] != rows[j]
    dx = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(x, "correlation"))[rows[i], rows[j]]
    dy = scipy.spatial.distance.squareform(scipy.spatial.distance.pdist(y, "correlation"))[rows[i], rows[j]]
    return scipy.stats.spearmanr(dx[keep], dy[keep]).statistic


def test_compare_intervals_equal_an_independent_numpy_and_scipy_bootstrap():
    x, y = related(30, 5, 6, seed=8)
    res = sim.compare(x, y, measures=("cka", "rsa"), n_permutations=19, n_boot=120, seed=5, progress=False)
    draws = stats.bootstrap_indices(30, 120, seed=5).numpy()
    assert draws.min() >= 0 and draws.max() < 30
    counts = np.stack([np.bincount(r, minlength=30) for r in draws])  # what the batched forms are given
    assert np.array_equal(resample_counts(torch.as_tensor(draws), 30).numpy(), counts)
    xn, yn = x.numpy(), y.numpy()
    cka = [numpy_linear_cka(xn[r], yn[r]) for r in draws]
    rsa = [numpy_rsa_without_copies(xn, yn, r) for r in draws]
    for m, values in ((0, cka), (1, rsa)):
        low, high = np.percentile(values, [2.5, 97.5])
        assert float(res.extras["ci_low"][m]) == pytest.approx(low, abs=1e-12)
        assert float(res.extras["ci_high"][m]) == pytest.approx(high, abs=1e-12)
        assert float(res.extras["boot_bias"][m]) == pytest.approx(np.mean(values) - float(res.values[m]), abs=1e-12)


def test_bootstrap_ci_of_a_registered_metric_takes_the_batched_form_with_the_loops_values():
    x, y = related(25, 4, 6, seed=9)
    low, high = stats.bootstrap_ci(sim.procrustes, x, y, n_boot=200, seed=2)
    loop = loop_values(sim.procrustes, False, {}, x, y, stats.bootstrap_indices(25, 200, seed=2))
    torch.testing.assert_close(torch.stack([low, high]), torch.quantile(loop, torch.tensor([0.025, 0.975],
                                                                                           dtype=torch.float64)))


def test_a_non_finite_batched_value_is_refused_naming_the_statistic():
    def ratio(x, y):
        return float(x.sum() / y.sum())

    @stats.register_bootstrap(ratio)
    def _ratio_bootstrap(x, y):
        def _evaluate(counts, memory_mb):
            return counts @ x / (counts @ y), torch.zeros(counts.shape[0], dtype=torch.bool)
        return stats.PreparedBootstrap(_evaluate, bytes_per_resample=8)

    x, y = torch.ones(5, dtype=torch.float64), torch.tensor([1.0, -1.0, 1.0, -1.0, 0.0], dtype=torch.float64)
    with pytest.raises(InputError, match=r"bootstrap: the batched ratio on resamples 0\.\.1999 has \d+ NaN/Inf"):
        stats.bootstrap_ci(ratio, x, y, seed=0)


def test_compare_is_the_same_at_any_finite_scale():
    x, y = related(24, 4, 5, seed=10)
    kwargs = dict(measures=("cka", "svcca", "procrustes", "rsa", "mutual_knn"), options={"mutual_knn": {"k": 4}},
                  n_permutations=29, n_boot=60, progress=False)
    ref = sim.compare(x, y, **kwargs)
    for scale in (1e-200, 1e200):
        res = sim.compare(x * scale, y, **kwargs)
        for key in ("ci_low", "ci_high", "null", "p_value"):
            torch.testing.assert_close(res.extras[key], ref.extras[key], rtol=1e-9, atol=1e-12)


def test_compare_says_how_long_long_work_will_take_before_it_starts(monkeypatch, capsys):
    x, y = related(30, 5, 6, seed=11)
    kwargs = dict(measures=("cka", "rsa"), n_permutations=40, n_boot=40, progress=False)
    quiet = sim.compare(x, y, **kwargs)
    assert "to go on this machine" not in capsys.readouterr().err
    monkeypatch.setattr(_compare, "_ANNOUNCE_LOOP_SECONDS", 0.0)
    monkeypatch.setattr(_schedule, "_QUIET_SECONDS", 0.0)
    announced = sim.compare(x, y, **kwargs)
    assert re.search(r"compare: about 0 s to go on this machine \(each of 4 stages timed on its first 8 rows; the "
                     r"longest: (cka|rsa) (null|bootstrap), 0 s\)", capsys.readouterr().err)
    for key in ("null", "ci_low", "ci_high"):  # the timed rows are part of the result, not recomputed differently
        torch.testing.assert_close(announced.extras[key], quiet.extras[key], rtol=0, atol=0)


def test_compare_refuses_a_memory_budget_that_is_not_positive():
    x, y = related(10, 3, 3)
    with pytest.raises(OptionError, match="compare: memory_mb must be positive, got 0.0"):
        sim.compare(x, y, memory_mb=0.0)


def test_resampled_rsa_ties_copies_exactly_as_scipy_does_on_the_full_rdm():
    x, y = related(20, 5, 6, seed=12)
    rows = stats.bootstrap_indices(20, 3, seed=4)
    for r in rows:
        assert rsa_resampled(x[r], y[r], r) == pytest.approx(numpy_rsa_without_copies(x.numpy(), y.numpy(),
                                                                                      r.numpy()), abs=1e-12)


@pytest.mark.parametrize("options, data", [({"rdm": "euclidean"}, integer_valued(20, 3, 2, seed=14)),
                                           ({"rdm": "euclidean", "compare": "pearson"}, integer_valued(20, 3, 2, seed=14)),
                                           ({}, related(20, 5, 6, seed=14))])
def test_rsa_ranks_in_small_chunks_equal_the_loop_with_ties_across_chunks(monkeypatch, options, data):
    from tl_interp.similarity import _resample_pairs
    monkeypatch.setattr(_resample_pairs, "_CHUNK", 7)  # 190 RDM entries in ~27 chunks, tie groups cut at their starts
    x, y = data
    index = stats.bootstrap_indices(20, 40, seed=3)
    evaluate, _, calls = counting(rsa_resampled, True, options, x, y)
    torch.testing.assert_close(evaluate(index, 0), loop_values(rsa_resampled, True, options, x, y, index),
                               rtol=1e-9, atol=1e-12)
    assert len(calls) < 4


def test_rsa_with_wide_row_ids_and_float64_ranks_equals_the_loop(monkeypatch):
    # the layouts of more than 2^15 rows (int32 row ids) and of more than 46,340 (float64 ranks of Y)
    from tl_interp.similarity import _resample_pairs
    monkeypatch.setattr(_resample_pairs, "_INT16_ROWS", 4)
    monkeypatch.setattr(_resample_pairs, "_INT32_RANKS", 16)
    x, y = integer_valued(20, 3, 2, seed=14)
    index = stats.bootstrap_indices(20, 40, seed=3)
    evaluate, _, calls = counting(rsa_resampled, True, {"rdm": "euclidean"}, x, y)
    torch.testing.assert_close(evaluate(index, 0), loop_values(rsa_resampled, True, {"rdm": "euclidean"}, x, y, index),
                               rtol=1e-9, atol=1e-12)
    assert len(calls) < 4


def test_rbf_cka_one_resample_at_a_time_over_distinct_items_equals_the_loop(monkeypatch):
    from tl_interp.similarity import _resample_kernels
    monkeypatch.setattr(_resample_kernels, "_SMALL", 4)  # the large-n path: kernels over each resample's items
    x, y = related(30, 5, 6, seed=15)
    index = stats.bootstrap_indices(30, 40, seed=6)
    evaluate, _, calls = counting(sim.cka, False, {"kernel": "rbf", "threshold": 0.7}, x, y)
    torch.testing.assert_close(evaluate(index, 0), loop_values(sim.cka, False, {"kernel": "rbf", "threshold": 0.7},
                                                               x, y, index), rtol=1e-9, atol=1e-12)
    assert len(calls) < 4


def test_weighted_products_are_the_same_for_a_block_of_few_or_many_resamples():
    from tl_interp.similarity._resample_products import weighted_products
    a, b = randn(30, 6, seed=16), randn(30, 4, seed=17)
    counts = resample_counts(stats.bootstrap_indices(30, 12, seed=7), 30)
    many = weighted_products(counts, [(a, a), (a, b)])  # 12 resamples >= 6 columns: outer products
    few = [weighted_products(counts[i:i + 2], [(a, a), (a, b)]) for i in range(0, 12, 2)]  # stacked rows
    for k in range(2):
        torch.testing.assert_close(torch.cat([f[k] for f in few]), many[k], rtol=1e-12, atol=1e-14)
    rows = stats.bootstrap_indices(30, 12, seed=7)
    xr, yr = a[rows] - a[rows].mean(1, keepdim=True), b[rows] - b[rows].mean(1, keepdim=True)
    torch.testing.assert_close(many[1], xr.mT @ yr, rtol=1e-12, atol=1e-12)


def test_what_a_prepared_bootstrap_holds_comes_out_of_the_memory_budget():
    x, y = related(30, 5, 6, seed=18)
    f = functools.partial(rsa_resampled)
    one = lambda b, r: rsa_resampled(x[r], y[r], r)  # noqa: E731
    _, block = bootstrap_evaluator(f, x, y, one=one, memory_mb=1.0)
    size = 30 * 29 // 2
    # Y's ranks (twice each, int32) and a chunk's temporaries; int16 pairs of both orders and the int32 map
    per, held = 4 * size + 8 * 16 * size, (4 * 2 + 4) * size
    assert block == (2**20 - held) // per
