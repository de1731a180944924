"""Reliability probes (issue 19): statistics that must not look significant when they are not numbers.

- item 3: a NaN or inf statistic (observed or null), or NaN input, is refused with an
  ``InputError`` naming the statistic, wherever a p-value or interval is computed;
- item 6: scale-free scores (CKA, CCA, Procrustes, RSA, kNN, correlations, kurtosis, variance
  shares, paired fits) give the same value at any finite scale; only a constant input is refused;
- item 9 and the unclear errors: malformed options get a typed error naming the fix.

References: numpy/scipy formulas computed here, independently of tl_interp.
"""

import functools

import numpy as np
import pytest
import scipy.spatial.distance
import scipy.stats
import torch
from torch.testing import assert_close

import tl_interp as ti
from tl_interp import geometry, similarity as sim, stats, weights
from tl_interp.errors import InputError, OptionError, SelectionError, ShapeError, TlInterpWarning


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


def test_layer_angles_with_others_equal_to_targets_names_the_positions_not_nan_p_values() -> None:
    states = gaussian(3, 5, 6, 4, seed=6)
    t = torch.tensor([1, 2, 3, 4, 5])
    with pytest.raises(SelectionError, match=r"others equal targets in rows \[0, 1, 2, 3, 4\] \(5 of 5 prompts\).*"
                                             r"pass others= positions that differ from targets"):
        geometry.layer_angles(states, targets=t, others=t)


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


def test_a_constant_input_has_no_variance_at_any_scale() -> None:
    # the mean of a constant column is off by rounding; rescaled, that rounding must not pose as variance
    constant = torch.full((7, 3), 0.1, dtype=torch.float64)
    with pytest.raises(InputError, match="variance_explained: X has no variance around its mean"):
        geometry.variance_explained(constant, torch.eye(3)[:1])
    with pytest.raises(InputError, match="spectrum: X is all zeros"):
        geometry.spectrum(constant, center=True)


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


def test_spectrum_keeps_the_singular_values_at_their_scale() -> None:
    expected = np.linalg.svd(X.numpy(), compute_uv=False) * 1e200
    assert_close(geometry.spectrum(X * 1e200).singular_values, torch.as_tensor(expected), rtol=1e-12, atol=0)


def test_paired_geometry_at_1e200_equals_paired_at_unit_scale() -> None:
    a, b = gaussian(12, 4, seed=7), gaussian(12, 4, seed=8)
    ref = geometry.paired(a, b, n_permutations=99, n_boot=50, progress=False)
    big = geometry.paired(a * 1e200, b * 1e200, n_permutations=99, n_boot=50, progress=False)
    for fit in ("shift", "rotation", "shift_rotation"):
        assert big.p_value(fit) == ref.p_value(fit)
    assert_close(big.cosine, ref.cosine)
    assert big.pca_explained == pytest.approx(ref.pca_explained, rel=1e-12)


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


def test_spectrum_rank_takes_a_share_in_0_1_and_never_exceeds_the_directions_with_variance() -> None:
    s = geometry.spectrum(torch.diag(torch.tensor([3.0, 1.0, 0.0], dtype=torch.float64)))
    for share in (0.0, 1.5, -0.1):
        with pytest.raises(OptionError, match=f"share={share} is not a fraction of the variance in \\(0, 1\\]"):
            s.rank(share)  # before: rank(1.5) = 3 (more than the 2 directions with variance), rank(0) = 1
    assert [s.rank(x) for x in (0.5, 0.9, 0.95, 1.0)] == [1, 1, 2, 2]  # shares 0.9, 0.1, 0


def test_clusters_refuses_zero_clusters() -> None:
    cm = weights.cosine_matrix(gaussian(6, 3, seed=10))
    with pytest.raises(SelectionError, match=r"n_clusters=0 with 6 vectors; choose an int in \[1, 6\]"):
        cm.clusters(0)  # before: one cluster per row
    assert cm.clusters(2).unique().numel() == 2


def test_project_and_orthogonalize_refuse_nan_like_variance_explained() -> None:
    nan_row = torch.tensor([[float("nan"), 1.0]])
    with pytest.raises(InputError, match=r"project: X has 1 NaN/Inf entries \(first at index \(0, 0\)\)"):
        geometry.project(nan_row, torch.tensor([[1.0, 0.0]]))
    with pytest.raises(InputError, match=r"orthogonalize: v has 1 NaN/Inf entries"):
        weights.orthogonalize(nan_row[0], torch.tensor([1.0, 0.0]))
    with pytest.raises(InputError, match=r"variance_explained: X has 1 NaN/Inf entries"):
        geometry.variance_explained(nan_row, torch.tensor([[1.0, 0.0]]))


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
    with pytest.raises(OptionError, match=r"k=3 principal components of 4 pairs in 6 dimensions; the centred "
                                          r"differences "
                                          r"span at most min\(n - 1, d\) = 3 directions"):
        geometry.paired(a, a + 1, k=3, progress=False)


def test_compare_warns_when_no_metric_can_reach_significance() -> None:
    # 5 rows: 120 pairings, so no p-value below 1 / 120 = 0.00833
    with pytest.warns(TlInterpWarning, match=r"compare: with 5 rows and 999 permutations no p-value can go below "
                                             r"0.00833 \(max\(1 / \(B \+ 1\), 1 / 5!\)\) > alpha 0.005"):
        sim.compare(X[:5], Y[:5], metrics=("cka",), n_permutations=999, n_boot=20, alpha=0.005)


def test_a_constant_column_stays_exactly_constant_after_centring() -> None:
    # its mean is off by rounding; scaled up, that rounding would pose as a varying unit
    x = X[:3].clone()
    x[:, 1] = 0.1
    assert_close(sim.cka(x, Y[:3]), sim.cka(x[:, [0, 2, 3]], Y[:3]), rtol=1e-12, atol=0)
    with pytest.raises(InputError, match="every row of X is the same"):
        sim.cka(X[[1, 1, 1]], Y[:3])


# -- unclear errors ------------------------------------------------------------------------------
def test_bootstrap_ci_vectorized_with_a_scalar_statistic_says_to_reduce_over_axis_1() -> None:
    # before: RuntimeError "zero-dimensional tensor (at position 0) cannot be concatenated"
    with pytest.raises(ShapeError, match=r"the statistic <lambda> got a block of 256 resamples .* returned shape \(\); "
                                         r"it must return one value per resample, shape \(256, \.\.\.\)"):
        stats.bootstrap_ci(lambda a: a.mean(), torch.arange(10.0), vectorized=True)
    low, high = stats.bootstrap_ci(lambda a: a.mean(1), torch.arange(10.0), vectorized=True, seed=0)
    means = np.arange(10.0)[stats.bootstrap_indices(10, 2000, seed=0).numpy()].mean(1)
    assert_close(torch.stack([low, high]), torch.as_tensor(np.percentile(means, [2.5, 97.5]), dtype=torch.float64))


def test_compare_names_the_metric_and_its_valid_options_for_a_typo() -> None:
    # before: a bare TypeError "got an unexpected keyword argument 'kernal'"
    with pytest.raises(OptionError, match=r"unknown option 'kernal' \(did you mean 'kernel'\?\) for metric 'cka' "
                                          r"\(cka\); valid options: \('kernel', 'threshold', 'debiased'\)"):
        sim.compare(X, Y, options={"cka": {"kernal": "rbf"}}, n_permutations=9, n_boot=9)
    with pytest.raises(OptionError, match=r"metric 'cka_rbf' is cka with \{'kernel': 'rbf'\}"):
        sim.compare(X, Y, metrics=("cka_rbf",), options={"cka_rbf": {"kernel": "linear"}}, n_permutations=9, n_boot=9)


def test_kurtosis_names_an_axis_that_does_not_exist_and_matches_scipy_otherwise() -> None:
    z = gaussian(6, 20, seed=15)
    with pytest.raises(SelectionError, match=r"kurtosis: dim=5 but X has 2 axes \(shape \(6, 20\)\)"):
        weights.kurtosis(z, dim=5)  # before: IndexError "tuple index out of range"
    assert_close(weights.kurtosis(z * 1e200, dim=1), torch.as_tensor(scipy.stats.kurtosis(z.numpy(), axis=1)))


def test_the_finiteness_check_is_shared() -> None:
    # one message for every entry point: the same check, not copies
    for call in (lambda: sim.cka(X, Y.clone().fill_(float("inf"))), lambda: geometry.pearson(X[:, 0] / 0, Y[:3, 0]),
                 lambda: geometry.shift_residual(X, X * float("nan"))):
        with pytest.raises(InputError, match=r"has \d+ NaN/Inf entries \(first at index \([0-9, ]*\)\): "):
            call()
    assert ti.stats._inputs.check_finite is ti.geometry._subspace.check_finite
