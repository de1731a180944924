"""Debiased CKA's batched bootstrap equals its loop (``cka_debiased_resampled`` on ``X[rows]``: counts over
distinct items, re-centred by their unweighted mean) on the same resamples, duplicates included; resamples
it can't certify take that loop. References: the loop, and a numpy weighted U-statistic written here."""

import functools
import itertools

import numpy as np
import pytest
import torch

from tl_interp import similarity as sim
from tl_interp import stats
from tl_interp.similarity._kernels import cka_debiased_resampled
from tl_interp.stats._bootstrap import bootstrap_evaluator


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def related(n, d1, d2, seed=0, shift=0.0):
    x = randn(n, d1, seed=seed) + shift  # off-centre rows: the resample's re-centring matters
    return x, x @ randn(d1, d2, seed=seed + 1) + 2 * randn(n, d2, seed=seed + 2)


def evaluator(x, y, memory_mb=1024.0, **options):
    """The batched evaluator, with its loop fallback counted."""
    calls = []
    f = functools.partial(cka_debiased_resampled, **options)

    def one(b, rows):
        calls.append(b)
        return f(x[rows], y[rows], rows)

    evaluate, block = bootstrap_evaluator(f, x, y, one=one, memory_mb=memory_mb)
    return evaluate, block, calls


def loop(x, y, index):
    return torch.tensor([cka_debiased_resampled(x[r], y[r], r) for r in index], dtype=torch.float64)


CASES = {
    "n=8, many duplicates": related(8, 3, 4, seed=1, shift=3.0),
    "n=40, gram products": related(40, 12, 14, seed=2, shift=-2.0),
    "n=12, d > n (factors)": related(12, 20, 15, seed=3, shift=1.0),
    "n=150, n >> d": related(150, 5, 6, seed=4, shift=10.0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_batched_debiased_cka_equals_the_loop_on_the_same_resamples(case):
    x, y = CASES[case]
    index = stats.bootstrap_indices(x.shape[0], 120, seed=len(case))
    assert (resample := index[0]).unique().numel() < x.shape[0]  # resamples repeat items
    evaluate, _, calls = evaluator(x, y)
    fast = evaluate(index, 0)
    reference = loop(x, y, index)
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert len(calls) <= int(reference.isnan().sum()) + 2  # the batched form did the work
    assert resample.numel() == x.shape[0]


def test_debiased_cka_of_unrelated_data_near_zero_equals_the_loop():
    x, y = randn(60, 7, seed=5) + 4, randn(60, 9, seed=6)
    index = stats.bootstrap_indices(60, 80, seed=2)
    evaluate, _, calls = evaluator(x, y)
    fast = evaluate(index, 0)
    assert fast.abs().max() < 0.2 and not calls
    torch.testing.assert_close(fast, loop(x, y, index), rtol=1e-9, atol=1e-13)


def test_resamples_with_fewer_than_four_distinct_items_take_the_loop_and_get_its_nan():
    x, y = related(10, 3, 4, seed=7)
    index = stats.bootstrap_indices(10, 6, seed=3)
    index[1] = torch.tensor([2, 5, 5, 2, 2, 9, 9, 9, 5, 2])  # three distinct items
    index[4] = 6  # one item ten times
    evaluate, _, calls = evaluator(x, y)
    values = evaluate(index, 0)
    assert calls == [1, 4] and values[[1, 4]].isnan().all()
    torch.testing.assert_close(values, loop(x, y, index), equal_nan=True, rtol=1e-9, atol=1e-12)


def test_the_block_of_rows_and_of_resamples_does_not_change_the_values():
    x, y = related(30, 6, 5, seed=8, shift=2.0)
    index = stats.bootstrap_indices(30, 40, seed=4)
    big, block, _ = evaluator(x, y)
    small, tiny_block, _ = evaluator(x, y, memory_mb=1e-3)  # one resample at a time, one Gram row at a time
    assert tiny_block == 1 and block >= 40
    torch.testing.assert_close(torch.cat([small(index[i:i + 1], i) for i in range(40)]), big(index, 0),
                               rtol=1e-12, atol=1e-14)


def numpy_weighted_debiased_cka(x: np.ndarray, y: np.ndarray, rows: np.ndarray) -> float:
    """Brute force: the unbiased HSIC's three means over distinct tuples (pairs, triples, 4-tuples) of the
    resample's distinct items, each tuple weighted by the product of its items' counts."""
    items, w = np.unique(rows, return_counts=True)
    xs, ys = x[items] - x[items].mean(0), y[items] - y[items].mean(0)

    def mean(fn, order):
        tuples = list(itertools.permutations(range(len(items)), order))
        weights = np.array([np.prod(w[list(t)]) for t in tuples], dtype=float)
        return float(weights @ np.array([fn(*t) for t in tuples]) / weights.sum())

    def hsic(k, l):
        return (mean(lambda i, j: k[i, j] * l[i, j], 2) + mean(lambda i, j, q, r: k[i, j] * l[q, r], 4)
                - 2 * mean(lambda i, j, q: k[i, j] * l[i, q], 3))

    kx, ky = xs @ xs.T, ys @ ys.T
    return hsic(kx, ky) / np.sqrt(hsic(kx, kx) * hsic(ky, ky))


def test_batched_debiased_cka_equals_a_brute_force_u_statistic():
    x, y = related(7, 3, 2, seed=9, shift=5.0)
    index = stats.bootstrap_indices(7, 5, seed=5)
    evaluate, _, _ = evaluator(x, y)
    fast = evaluate(index, 0)
    for r, value in zip(index, fast.tolist()):
        if r.unique().numel() >= 4:
            assert value == pytest.approx(numpy_weighted_debiased_cka(x.numpy(), y.numpy(), r.numpy()), rel=1e-9)


def test_compare_debiased_cka_is_the_same_at_any_finite_scale():
    x, y = related(24, 4, 5, seed=10, shift=1.0)
    kwargs = dict(measures=("cka_debiased",), n_permutations=19, n_boot=60, progress=False)
    ref = sim.compare(x, y, **kwargs)
    for scale in (1e-200, 1e200):
        res = sim.compare(x * scale, y, **kwargs)
        for key in ("ci_low", "ci_high", "boot_bias"):
            torch.testing.assert_close(res.extras[key], ref.extras[key], rtol=1e-9, atol=1e-12)


def test_compare_interval_of_debiased_cka_is_the_loops():
    x, y = related(20, 4, 5, seed=11, shift=-3.0)
    res = sim.compare(x, y, measures=("cka_debiased",), n_permutations=99, n_boot=80, seed=3, progress=False)
    values = loop(x, y, stats.bootstrap_indices(20, 80, seed=3))
    values = values[~values.isnan()]
    low, high = stats.percentile_interval(values, 0.05)
    torch.testing.assert_close(torch.stack([res.extras["ci_low"][0], res.extras["ci_high"][0]]),
                               torch.stack([low, high]), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("n, threshold", [(8, 0.5), (40, 1.0), (120, 0.5)])
def test_batched_debiased_rbf_cka_equals_the_loop_on_the_same_resamples(n, threshold):
    x, y = related(n, 4, 5, seed=12)
    index = stats.bootstrap_indices(n, 60, seed=n)
    evaluate, _, calls = evaluator(x, y, kernel="rbf", threshold=threshold)
    fast = evaluate(index, 0)
    reference = torch.tensor([cka_debiased_resampled(x[r], y[r], r, kernel="rbf", threshold=threshold)
                              for r in index], dtype=torch.float64)
    torch.testing.assert_close(fast, reference, rtol=1e-9, atol=1e-12, equal_nan=True)
    assert len(calls) <= int(reference.isnan().sum()) + 2


def test_resampled_debiased_rbf_cka_of_the_data_itself_is_the_debiased_rbf_score():
    x, y = related(30, 4, 5, seed=13)
    every = torch.arange(30)
    assert cka_debiased_resampled(x, y, every, kernel="rbf", threshold=0.7) == pytest.approx(
        sim.cka(x, y, kernel="rbf", threshold=0.7, debiased=True), abs=1e-12)


def test_compare_resamples_debiased_rbf_cka_with_the_rbf_kernel():
    # before: refused, its loop was linear whatever the kernel; now the interval is the RBF loop's
    x, y = related(30, 3, 4, seed=14)
    res = sim.compare(x, y, measures=("cka_debiased",), options={"cka_debiased": {"kernel": "rbf"}}, n_boot=60,
                      n_permutations=99, seed=4, progress=False)
    values = torch.tensor([cka_debiased_resampled(x[r], y[r], r, kernel="rbf")
                           for r in stats.bootstrap_indices(30, 60, seed=4)], dtype=torch.float64)
    linear = loop(x, y, stats.bootstrap_indices(30, 60, seed=4))
    low, high = stats.percentile_interval(values[~values.isnan()], 0.05)
    torch.testing.assert_close(torch.stack([res.extras["ci_low"][0], res.extras["ci_high"][0]]),
                               torch.stack([low, high]), rtol=1e-9, atol=1e-12)
    assert not torch.allclose(values, linear)  # the kernel matters: this is not the linear interval
