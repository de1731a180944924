"""RBF CKA's batched bootstrap: each resample's median bandwidth equals numpy's median of the resample's
n^2 squared distances, whichever way it is counted (the window near the middle, its slices, the whole
order), and the values equal the loop ``cka(X[rows], Y[rows], kernel="rbf")`` on the same resamples."""

import functools

import numpy as np
import pytest
import torch

from tl_interp import similarity as sim
from tl_interp import stats
from tl_interp.similarity import _resample_kernels
from tl_interp.similarity._resample_kernels import _Median, _squared_distances
from tl_interp.stats._bootstrap import bootstrap_evaluator, resample_counts


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def related(n, d1, d2, seed=0):
    x = randn(n, d1, seed=seed)
    return x, x @ randn(d1, d2, seed=seed + 1) + 2 * randn(n, d2, seed=seed + 2)


def numpy_medians(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """The median of each resample's n^2 squared distances (copies and the diagonal included)."""
    out = []
    for rows in index:
        xr = x[rows]
        out.append(np.median(((xr[:, None, :] - xr[None, :, :]) ** 2).sum(-1)))
    return np.array(out)


LAYOUTS = {  # (window half-width x n^1.5, slices, prefix bytes)
    "window in slices": (1.5, 16, 16 * 2**20),
    "window as one slice": (1.5, 16, 1),
    "a window too narrow: the whole order": (0.01, 4, 16 * 2**20),
    "the whole order as the window": (100.0, 3, 16 * 2**20),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_resamples_median_is_numpys_median_of_its_squared_distances(monkeypatch, layout):
    window, slices, prefix = LAYOUTS[layout]
    monkeypatch.setattr(_resample_kernels, "_WINDOW", window)
    monkeypatch.setattr(_resample_kernels, "_SLICES", slices)
    monkeypatch.setattr(_resample_kernels, "_PREFIX_BYTES", prefix)
    x = randn(120, 4, seed=1)
    index = stats.bootstrap_indices(120, 60, seed=2)
    median = _Median(_squared_distances(x - x.mean(0)))
    medians, among_zeros = median(resample_counts(index, 120))
    np.testing.assert_allclose(medians.numpy(), numpy_medians(x.numpy(), index.numpy()), rtol=1e-12)
    assert not among_zeros.any()


def test_a_median_among_the_zero_distances_is_flagged():
    x = randn(6, 2, seed=3)
    index = torch.tensor([[0, 0, 0, 0, 1, 2], [0, 1, 2, 3, 4, 5]])  # 4 copies: 18 of 36 distances are 0
    medians, among_zeros = _Median(_squared_distances(x - x.mean(0)))(resample_counts(index, 6))
    assert among_zeros.tolist() == [True, False]
    assert float(medians[1]) == pytest.approx(float(numpy_medians(x.numpy(), index[1:].numpy())[0]), rel=1e-12)


@pytest.mark.parametrize("small, window", [(4, 1.5), (4, 0.01), (1000, 1.5)])
def test_rbf_cka_bootstrap_equals_the_loop_per_resample_or_in_batches(monkeypatch, small, window):
    monkeypatch.setattr(_resample_kernels, "_SMALL", small)  # 4: one resample at a time over its distinct items
    monkeypatch.setattr(_resample_kernels, "_WINDOW", window)
    x, y = related(50, 5, 6, seed=4)
    index = stats.bootstrap_indices(50, 60, seed=5)
    f = functools.partial(sim.cka, kernel="rbf", threshold=0.8)
    calls = []

    def one(b, rows):
        calls.append(b)
        return f(x[rows], y[rows])

    evaluate, _ = bootstrap_evaluator(f, x, y, one=one)
    loop = torch.tensor([f(x[r], y[r]) for r in index], dtype=torch.float64)
    torch.testing.assert_close(evaluate(index, 0), loop, rtol=1e-9, atol=1e-12)
    assert not calls
