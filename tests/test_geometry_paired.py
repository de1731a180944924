"""ti.geometry.paired: rotations and shifts are told apart, fits agree with scipy, nulls with loops."""

import functools

import numpy as np
import pytest
import scipy.stats
import torch
from torch.testing import assert_close

import tl_interp as ti
from tl_interp import geometry
from tl_interp.errors import InputError, OptionError, SelectionError, ShapeError, TlInterpWarning

geometry = ti.geometry


def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def rotation(d: int, seed: int = 1) -> torch.Tensor:
    return torch.linalg.qr(gaussian(d, d, seed=seed)).Q


def test_an_exact_rotation_has_no_rotation_residual_and_a_large_shift_residual() -> None:
    A = gaussian(40, 8)
    g = geometry.paired(A, A @ rotation(8), n_permutations=99, progress=False)
    assert g.rotation_residual < 1e-6 and g.shift_rotation_residual < 1e-6
    assert g.shift_residual > 0.5 and g.improvement > 0.99
    assert g.p_value("rotation") == pytest.approx(0.01) and g.baseline("rotation") > 0.5


def test_an_exact_shift_has_no_shift_residual_and_a_rotation_cannot_mimic_it() -> None:
    A = gaussian(40, 8)
    g = geometry.paired(A, A + 3.0 * gaussian(8, seed=5), n_permutations=99, progress=False)
    assert g.shift_residual < 1e-10 and g.shift_rotation_residual < 1e-6
    assert g.rotation_residual > 0.3 and g.improvement < 0


def test_rotation_fits_agree_with_scipy_orthogonal_procrustes() -> None:
    A, B = gaussian(30, 5), gaussian(30, 5, seed=3) + gaussian(30, 5) @ rotation(5)
    R, _ = scipy.linalg.orthogonal_procrustes(A.numpy(), B.numpy())
    R = torch.as_tensor(R)
    assert_close(geometry.procrustes_rotation(A, B), R)
    centred = B - B.mean(0)
    assert_close(geometry.rotation_residual(A, B), (B - A @ R).norm() / centred.norm())
    Rc, _ = scipy.linalg.orthogonal_procrustes((A - A.mean(0)).numpy(), centred.numpy())
    by_hand = (centred - (A - A.mean(0)) @ torch.as_tensor(Rc)).norm() / centred.norm()
    assert_close(geometry.shift_rotation_residual(A, B), by_hand)
    d = B - A
    assert_close(geometry.shift_residual(A, B), (d - d.mean(0)).norm() / centred.norm())


@pytest.mark.parametrize("n, d", [(12, 5), (6, 20)])
@pytest.mark.parametrize("name", ["shift_residual", "rotation_residual", "shift_rotation_residual", "difference_pca"])
def test_vectorised_nulls_equal_the_loop_over_permutations(name, n, d) -> None:
    stat = getattr(geometry, name)
    if name == "difference_pca":
        stat = functools.partial(stat, k=2)
    A, B = gaussian(n, d), gaussian(n, d, seed=2)
    perms = ti.stats.permutation_indices(n, 64, seed=0)
    fast = ti.stats.permutation_test(stat, A, B, permutations=perms, alternative="less")
    loop = ti.stats.permutation_test(lambda a, b: stat(a, b), A, B, permutations=perms, alternative="less")
    assert fast.vectorized and not loop.vectorized
    assert_close(fast.null, loop.null)
    assert_close(fast.p_value, loop.p_value)


@pytest.mark.parametrize("method", ["pearson", "spearman", "kendall"])
def test_correlations_match_scipy_including_ties_and_their_nulls_match_the_loop(method) -> None:
    x = torch.tensor([1.0, 2.0, 2.0, 3.0, 5.0, 4.0, 7.0, 7.0, 6.0, 0.5], dtype=torch.float64)
    y = torch.tensor([0.3, 0.1, 0.4, 0.4, 0.9, 0.5, 0.2, 1.0, 0.8, 0.8], dtype=torch.float64)
    reference = {"pearson": scipy.stats.pearsonr, "spearman": scipy.stats.spearmanr,
                 "kendall": scipy.stats.kendalltau}[method](x.numpy(), y.numpy()).statistic
    stat = geometry.CORRELATIONS[method]
    assert float(stat(x, y)) == pytest.approx(reference, abs=1e-12)
    perms = ti.stats.permutation_indices(10, 200, seed=1)
    fast = ti.stats.permutation_test(stat, x, y, permutations=perms, alternative="two-sided")
    loop = ti.stats.permutation_test(lambda a, b: stat(a, b), x, y, permutations=perms, alternative="two-sided")
    assert fast.vectorized and torch.allclose(fast.null, loop.null) and fast.p_value == loop.p_value


def test_the_per_pair_cosine_tracks_a_score_that_is_built_from_it() -> None:
    A = gaussian(30, 6)
    noise = gaussian(30, 6, seed=4) * torch.linspace(0.1, 2.0, 30)[:, None]  # later pairs turn further
    B = A + noise
    score = -torch.arange(30.0)  # larger score, smaller turn
    g = geometry.paired(A, B, score=score, n_permutations=499, progress=False)
    cos = torch.nn.functional.cosine_similarity(A, B, dim=-1)
    assert_close(g.cosine, cos)
    assert_close(g.angles, torch.rad2deg(torch.acos(cos)))
    rho = scipy.stats.spearmanr(cos.numpy(), score.numpy()).statistic
    assert g.correlation("spearman") == pytest.approx(rho) and rho > 0.6
    assert g.correlation_p_value("spearman") < 0.01
    assert g.correlation("kendall") == pytest.approx(scipy.stats.kendalltau(cos.numpy(), score.numpy()).statistic)


def test_differences_along_one_direction_concentrate_beyond_the_repaired_baseline() -> None:
    A = gaussian(30, 10)
    along = torch.linspace(-2, 2, 30, dtype=torch.float64)[:, None] * gaussian(10, seed=9)
    B = A + along + 0.05 * gaussian(30, 10, seed=8)
    g = geometry.paired(A, B, k=1, n_permutations=199, progress=False)
    assert g.pca_explained > 0.9 > g.baseline_pca_explained and g.pca_p_value < 0.01


def test_layers_are_analysed_one_by_one_with_the_same_permutations() -> None:
    A = gaussian(3, 12, 5)
    B = A + 0.5 * gaussian(3, 12, 5, seed=6)
    score = gaussian(12, seed=7)
    every = geometry.paired(A, B, score=score, n_permutations=99, seed=3, progress=False)
    assert every.rotation_residual.shape == (3,) and every.cosine.shape == (3, 12)
    perms = ti.stats.permutation_indices(12, 99, seed=3)  # the seed's re-pairings (public)
    for layer in range(3):
        a, b = A[layer].numpy(), B[layer].numpy()
        # references by hand, layer by layer: scipy's rotation, the shift residual on every
        # re-pairing and its p-value (1 + #{null <= observed}) / (B + 1), scipy's Pearson r
        R, _ = scipy.linalg.orthogonal_procrustes(a, b)
        bc = b - b.mean(0)
        assert float(every.rotation_residual[layer]) == pytest.approx(np.linalg.norm(b - a @ R) / np.linalg.norm(bc))

        def shift(b_paired: np.ndarray) -> float:
            d = b_paired - a
            return np.linalg.norm(d - d.mean(0)) / np.linalg.norm(bc)

        null = np.array([shift(b[p]) for p in perms.numpy()])
        assert float(every.p_value("shift")[layer]) == pytest.approx((1 + np.sum(null <= shift(b))) / 100)
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        pearson = scipy.stats.pearsonr(cos, score.numpy()).statistic
        assert float(every.correlation("pearson")[layer]) == pytest.approx(pearson)
    one = geometry.paired(A[1], B[1], score=score, n_permutations=99, seed=3, progress=False)
    assert isinstance(one.rotation_residual, float) and one.p_value("shift") == float(every.p_value("shift")[1])
    low, high = every.cosine_interval
    assert bool((low <= every.mean_cosine).all() and (every.mean_cosine <= high).all())
    assert every.provenance.seed == 3


def test_results_save_load_and_draw(tmp_path) -> None:
    A = gaussian(2, 10, 4)
    g = geometry.paired(A, A + gaussian(2, 10, 4, seed=1), score=gaussian(10, seed=2), n_permutations=49,
                        progress=False)
    back = ti.results.Result.load(g.save(tmp_path / "paired.safetensors"))
    assert type(back).__name__ == "PairedGeometry"
    assert torch.equal(back.rotation_residual, g.rotation_residual) and back.methods == g.methods
    assert len(g.figure().data) == 2 * 3 + 2 + 3
    assert g.angle_histogram(0).data[0].type == "histogram"


def test_bad_pairs_fail_first_with_a_clear_message() -> None:
    A = gaussian(10, 4)
    with pytest.raises(ShapeError, match=r"same shape \(the same pairs\), got \(10, 4\) and \(9, 4\)"):
        geometry.paired(A, A[:9], progress=False)
    with pytest.raises(InputError, match="at least 3 pairs, got 2"):
        geometry.paired(A[:2], A[:2], progress=False)
    with pytest.raises(ShapeError, match="score has 9 values for 10 pairs"):
        geometry.paired(A, A + 1, score=torch.ones(9), progress=False)
    with pytest.raises(InputError, match=r"paired: B has 40 NaN/Inf entries \(first at index \(0, 0, 0\)\): 40 NaN"):
        geometry.paired(A, torch.full_like(A, float("nan")), progress=False)
    with pytest.raises(SelectionError, match="k=4 principal components of 10 pairs in 4 dimensions"):
        geometry.paired(A, A + 1, k=4, progress=False)
    with pytest.raises(OptionError, match="no 'spearman' correlation.*paired\\(\\) got no score"):
        geometry.paired(A, A + gaussian(10, 4, seed=1), n_permutations=9, progress=False).correlation()
    with pytest.raises(InputError, match="one sample is constant"):
        geometry.pearson(torch.ones(5), torch.arange(5.0))


# -- issue 10's reliability probes (formerly tests/test_reliability_statistics.py), beside the module they test --
def test_paired_geometry_at_1e200_equals_paired_at_unit_scale() -> None:
    a, b = gaussian(12, 4, seed=7), gaussian(12, 4, seed=8)
    ref = geometry.paired(a, b, n_permutations=99, n_boot=50, progress=False)
    big = geometry.paired(a * 1e200, b * 1e200, n_permutations=99, n_boot=50, progress=False)
    for fit in ("shift", "rotation", "shift_rotation"):
        assert big.p_value(fit) == ref.p_value(fit)
    assert_close(big.cosine, ref.cosine)
    assert big.pca_explained == pytest.approx(ref.pca_explained, rel=1e-12)


def test_paired_with_few_pairs_warns_with_the_smallest_reachable_p_value() -> None:
    a, b = gaussian(4, 3, seed=11), gaussian(4, 3, seed=12)
    # 4 pairs: 24 pairings, so a two-sided correlation can't go below 2 / 24 = 0.0833
    with pytest.warns(TlInterpWarning, match=r"with 4 pairs \(24 distinct pairings\) and 999 permutations, the "
                                             r"smallest reachable p-value is above alpha 0.05 \(the two-sided score "
                                             r"correlations: "
                                             r"0.0833\)"):
        g = geometry.paired(a, b, score=torch.arange(4.0), n_permutations=999, progress=False)
    assert g.correlation_p_value("pearson") >= 2 / 24
    # 3 pairs: 6 pairings, even the one-sided fits can't go below 1 / 6
    with pytest.warns(TlInterpWarning, match=r"the fits and the difference PCA: 0.167"):
        geometry.paired(a[:3], b[:3], n_permutations=999, progress=False)


def test_paired_default_k_leaves_the_difference_pca_room_to_vary() -> None:
    # 4 pairs in 6 dimensions: the centred differences span 3 directions, so k = 3 would explain all of them
    # for every pairing (before: the default k = 3 gave p = 1 whatever the data)
    a = gaussian(4, 6, seed=13)
    g = geometry.paired(a, a + gaussian(4, 6, seed=14), n_permutations=99, progress=False)
    assert g.provenance.settings["k"] == 2 and g.pca_explained < 1
    with pytest.raises(SelectionError, match=r"k=3 principal components of 4 pairs in 6 dimensions; the centred "
                                          r"differences "
                                          r"span at most min\(n - 1, d\) = 3 directions"):
        geometry.paired(a, a + 1, k=3, progress=False)
