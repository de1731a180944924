"""Similarity scores are the same at any finite scale; constant inputs and impossible
options are refused with the fix."""

import functools

import numpy as np
import pytest
import scipy.stats
import torch
from torch.testing import assert_close

from tl_interp import geometry, similarity as sim, stats, weights
from tl_interp.errors import InputError, OptionError, SelectionError, ShapeError, TlInterpWarning


# -- issue 10's reliability probes (formerly tests/test_reliability_statistics.py) --
def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


X, Y = gaussian(12, 4, seed=1), gaussian(12, 3, seed=2)


# -- item 6: any finite scale gives the same score ---------------------------------------------
def linear_cka_numpy(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019) feature-space linear CKA, in numpy."""
    x, y = x - x.mean(0), y - y.mean(0)
    return float(np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


SCALE_FREE = {
    "cka": sim.cka,
    "cka_rbf": functools.partial(sim.cka, kernel="rbf"),
    "cka_debiased": functools.partial(sim.cka, debiased=True),
    "svcca": sim.svcca,
    "pwcca": sim.pwcca,
    "procrustes": sim.procrustes,
    "rsa_correlation": sim.rsa,
    "rsa_euclidean": functools.partial(sim.rsa, rdm="euclidean"),
    "rsa_cosine": functools.partial(sim.rsa, rdm="cosine"),
    "mutual_knn": functools.partial(sim.mutual_knn, k=3),
    "pearson": lambda a, b: float(geometry.pearson(a[:, 0], b[:, 0])),
    "shift_residual": lambda a, b: float(geometry.shift_residual(a, b[:, [0, 1, 2, 0]])),
    "rotation_residual": lambda a, b: float(geometry.rotation_residual(a, b[:, [0, 1, 2, 0]])),
    "difference_pca": lambda a, b: float(geometry.difference_pca(a, b[:, [0, 1, 2, 0]], k=2)),
    "variance_explained": lambda a, b: geometry.variance_explained(a, torch.eye(4)[:2]),
    "spectrum_shares": lambda a, b: geometry.spectrum(a).explained,
    "kurtosis": lambda a, b: weights.kurtosis(a, dim=0),
}


@pytest.mark.parametrize("scale", [1e-200, 1e200, 1e300])
@pytest.mark.parametrize("name", list(SCALE_FREE))
def test_scale_free_scores_are_the_same_at_any_finite_scale(name: str, scale: float) -> None:
    # before: CKA was NaN at 1e200 and "without variation" at 1e-200; Procrustes 0.0 and SVCCA, kNN and
    # Pearson silently different at 1e200; RSA and kNN refused 1e-200 as constant
    score = SCALE_FREE[name]
    reference = torch.as_tensor(score(X, Y), dtype=torch.float64)
    assert bool(torch.isfinite(reference).all())
    # the paired fits compare A and B on one scale, so both are scaled; the others scale one side only
    scaled_y = Y * scale if name.endswith(("residual", "pca")) else Y
    assert_close(torch.as_tensor(score(X * scale, scaled_y), dtype=torch.float64), reference, rtol=1e-9, atol=1e-12)


def test_cka_at_extreme_scales_matches_the_numpy_formula_at_unit_scale() -> None:
    expected = linear_cka_numpy(X.numpy(), Y.numpy())
    for scale in (1e-200, 1.0, 1e200):
        assert sim.cka(X * scale, Y / scale) == pytest.approx(expected, rel=1e-12)


def test_only_a_truly_constant_representation_is_refused() -> None:
    with pytest.raises(InputError, match="every row of X is the same"):
        sim.cka(torch.full((12, 4), 1e-300, dtype=torch.float64), Y)
    # a tiny variation around a large offset is still a variation
    assert sim.cka(1e6 + 1e-3 * X, Y) == pytest.approx(linear_cka_numpy(X.numpy(), Y.numpy()), rel=1e-6)


def test_rsa_with_kendall_refuses_a_constant_rdm_like_spearman_and_pearson() -> None:
    # scipy's kendalltau gives NaN for a constant sample: before, rsa(compare="kendall") returned it
    with pytest.raises(InputError, match=r"rsa: every dissimilarity of Y is the same \(1.41421\)"):
        sim.rsa(X[:6], torch.eye(6, dtype=torch.float64), rdm="euclidean", compare="kendall")
    expected = scipy.stats.kendalltau(scipy.spatial.distance.pdist(X.numpy(), "correlation"),
                                      scipy.spatial.distance.pdist(Y.numpy(), "correlation")).statistic
    assert sim.rsa(X, Y, compare="kendall") == pytest.approx(expected, rel=1e-12)


def test_match_units_leaves_out_constant_units_and_keeps_units_at_any_scale() -> None:
    a = X.clone()
    a[:, 1] = 0.1  # constant, but its computed mean is off by rounding
    a[:, 2] *= 1e-200
    b = torch.cat([X[:, [0, 2, 3]], Y], dim=1)
    m = sim.match_units(a, b)
    assert m.constant_a.tolist() == [1]
    expected = np.corrcoef(X.numpy().T, b.numpy().T)[:4, 4:]  # units 0, 2, 3 of A against every unit of B
    got = {tuple(p): float(r) for p, r in zip(m.pairs.tolist(), m.correlations)}
    for i, j in got:
        assert got[(i, j)] == pytest.approx(expected[i, j], rel=1e-12)
    assert {i: j for i, j in got} == {0: 0, 2: 1, 3: 2}


def test_euclidean_rdm_keeps_its_scale_without_overflow() -> None:
    expected = scipy.spatial.distance.pdist(X.numpy()) * 1e200
    assert_close(sim.rdm(X * 1e200, "euclidean"), torch.as_tensor(expected), rtol=1e-12, atol=0)


@pytest.mark.parametrize("n, k", [(5, 10), (1, 1), (10, 9), (10, 0)])
def test_knn_chance_refuses_k_mutual_knn_would_refuse(n: int, k: int) -> None:
    # before: 2.5 (a chance level above 1) for (5, 10), ZeroDivisionError for (1, 1)
    with pytest.raises(SelectionError, match=f"knn_chance: k={k} neighbours among n={n} items"):
        sim.knn_chance(n, k)


def test_knn_chance_is_the_mean_overlap_of_unrelated_representations() -> None:
    n, k = 10, 3
    x = gaussian(n, 5, seed=9)
    overlaps = [sim.mutual_knn(x, x[perm], k=k) for perm in stats.permutation_indices(n, 400, seed=1)]
    assert np.mean(overlaps) == pytest.approx(sim.knn_chance(n, k), abs=0.03)


def test_jaccard_topk_refuses_vectors_of_different_lengths() -> None:
    with pytest.raises(ShapeError, match=r"jaccard_topk: x has shape \(5,\) and y \(7,\)"):
        sim.jaccard_topk(torch.arange(5.0), torch.arange(7.0), k=2)  # before: 0.0


def test_compare_warns_when_no_metric_can_reach_significance() -> None:
    # 5 rows: 120 pairings, so no p-value below 1 / 120 = 0.00833
    with pytest.warns(TlInterpWarning, match=r"compare: with 5 rows and 999 permutations no p-value can go below "
                                             r"0.00833 \(max\(1 / \(B \+ 1\), 1 / 5!\)\) > alpha 0.005"):
        sim.compare(X[:5], Y[:5], measures=("cka",), n_permutations=999, n_boot=20, alpha=0.005)


def test_a_constant_column_stays_exactly_constant_after_centring() -> None:
    # its mean is off by rounding; scaled up, that rounding would pose as a varying unit
    x = X[:3].clone()
    x[:, 1] = 0.1
    assert_close(sim.cka(x, Y[:3]), sim.cka(x[:, [0, 2, 3]], Y[:3]), rtol=1e-12, atol=0)
    with pytest.raises(InputError, match="every row of X is the same"):
        sim.cka(X[[1, 1, 1]], Y[:3])


def test_compare_names_the_metric_and_its_valid_options_for_a_typo() -> None:
    # before: a bare TypeError "got an unexpected keyword argument 'kernal'"
    with pytest.raises(OptionError, match=r"unknown option 'kernal' \(did you mean 'kernel'\?\) for metric 'cka' "
                                          r"\(cka\); valid options: \('kernel', 'threshold', 'debiased'\)"):
        sim.compare(X, Y, options={"cka": {"kernal": "rbf"}}, n_permutations=9, n_boot=9)
    with pytest.raises(OptionError, match=r"metric 'cka_rbf' is cka with \{'kernel': 'rbf'\}"):
        sim.compare(X, Y, measures=("cka_rbf",), options={"cka_rbf": {"kernel": "linear"}}, n_permutations=9, n_boot=9)
