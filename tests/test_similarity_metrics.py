"""ti.similarity metrics: published golden values, invariances (and required non-invariances),
agreement with scipy, and every pitfall refused or warned about with its numbers."""

import itertools

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import scipy.spatial
import scipy.stats
import torch

from tl_interp import similarity as sim
from tl_interp.errors import InputError, OptionError, SelectionError, ShapeError, TlInterpWarning


def kornblith_demo_data():
    # Kornblith et al.'s CKA demo notebook (google-research/google-research, representation_similarity/
    # Demo.ipynb, "Similarity of Neural Network Representations Revisited", ICML 2019)
    np.random.seed(1337)
    X = np.random.randn(100, 10)
    Y = np.random.randn(100, 10) + X
    return X, Y


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def orthogonal(d, seed=0):
    return torch.linalg.qr(randn(d, d, seed=seed))[0]


# -- golden values ------------------------------------------------------------------------
def test_cka_reproduces_kornblith_demo_values():
    X, Y = kornblith_demo_data()
    assert round(sim.cka(X, Y), 5) == 0.55761
    assert round(sim.cka(X, Y, kernel="rbf", threshold=0.5), 5) == 0.65483
    assert round(sim.cka(X, Y, debiased=True), 5) == 0.51346


def test_torch_and_numpy_inputs_give_the_same_float64_answer():
    X, Y = kornblith_demo_data()
    for fn in (sim.cka, sim.svcca, sim.pwcca, sim.procrustes, sim.rsa, sim.mutual_knn):
        assert fn(torch.tensor(X), torch.tensor(Y)) == pytest.approx(fn(X, Y), abs=1e-12)


# -- invariances ---------------------------------------------------------------------------
X0 = randn(80, 6, seed=1)
Y0 = X0 @ randn(6, 6, seed=2) + 0.7 * randn(80, 6, seed=3)
Q = orthogonal(6, seed=4)
GENERAL = randn(6, 6, seed=5) + 2 * torch.eye(6, dtype=torch.float64)  # invertible, not orthogonal
UNITS = torch.randperm(6, generator=torch.Generator().manual_seed(6))
TRANSFORMS = {
    "orthogonal": lambda y: y @ Q,
    "scale": lambda y: 3.5 * y,
    "translation": lambda y: y + torch.arange(6.0, dtype=torch.float64),
    "units": lambda y: y[:, UNITS],
}
INVARIANT = {  # the invariances each metric promises
    "cka": (sim.cka, ["orthogonal", "scale", "translation", "units"]),
    "cka_rbf": (lambda x, y: sim.cka(x, y, kernel="rbf"), ["orthogonal", "scale", "translation", "units"]),
    "cka_debiased": (lambda x, y: sim.cka(x, y, debiased=True), ["orthogonal", "scale", "translation", "units"]),
    "svcca": (sim.svcca, ["orthogonal", "scale", "translation", "units"]),
    "pwcca": (sim.pwcca, ["scale", "translation", "units"]),
    "procrustes": (sim.procrustes, ["orthogonal", "scale", "translation", "units"]),
    "rsa_euclidean": (lambda x, y: sim.rsa(x, y, rdm="euclidean"), ["orthogonal", "scale", "translation", "units"]),
    "rsa_correlation": (sim.rsa, ["scale", "units"]),
    "rsa_cosine": (lambda x, y: sim.rsa(x, y, rdm="cosine"), ["orthogonal", "scale", "units"]),
    "mutual_knn": (lambda x, y: sim.mutual_knn(x, y, k=8), ["orthogonal", "scale", "units"]),
}


@pytest.mark.parametrize("name,transform", [(m, t) for m, (_, ts) in INVARIANT.items() for t in ts])
def test_metric_is_invariant_where_it_promises(name, transform):
    fn = INVARIANT[name][0]
    assert fn(X0, TRANSFORMS[transform](Y0)) == pytest.approx(fn(X0, Y0), abs=1e-10)
    assert fn(TRANSFORMS[transform](Y0), X0) == pytest.approx(fn(Y0, X0), abs=1e-10)


@pytest.mark.parametrize("name", list(INVARIANT))
def test_identical_inputs_score_one(name):
    assert INVARIANT[name][0](X0, X0) == pytest.approx(1.0, abs=1e-10)


def test_linear_cka_and_procrustes_change_under_a_general_invertible_map_and_svcca_does_not():
    mapped = Y0 @ GENERAL
    assert abs(sim.cka(X0, mapped) - sim.cka(X0, Y0)) > 0.01
    assert abs(sim.procrustes(X0, mapped) - sim.procrustes(X0, Y0)) > 0.01
    assert sim.svcca(X0, mapped, keep=1.0) == pytest.approx(sim.svcca(X0, Y0, keep=1.0), abs=1e-10)


def test_debiased_cka_of_independent_data_averages_zero_and_biased_cka_does_not():
    biased, debiased = [], []
    for seed in range(40):
        x, y = randn(64, 64, seed=2 * seed), randn(64, 64, seed=2 * seed + 1)
        biased.append(sim.cka(x, y))
        debiased.append(sim.cka(x, y, debiased=True))
    d = np.array(debiased)
    assert abs(d.mean()) < 3 * d.std() / np.sqrt(len(d))  # ~0 within its standard error
    assert np.mean(biased) > 0.4  # the biased estimator is far from 0 at n = d = 64


def test_mutual_knn_of_unrelated_data_sits_at_its_chance_level():
    scores = [sim.mutual_knn(randn(50, 8, seed=s), randn(50, 8, seed=100 + s), k=5) for s in range(30)]
    assert np.mean(scores) == pytest.approx(sim.knn_chance(50, 5), abs=0.02)


def test_mutual_knn_normalises_rows_before_finding_neighbours():
    rescaled = X0 * torch.linspace(0.1, 10, 80, dtype=torch.float64)[:, None]  # row norms differ wildly
    assert sim.mutual_knn(X0, rescaled, k=5) == 1.0


# -- agreement with scipy ------------------------------------------------------------------
def test_procrustes_agrees_with_scipy_orthogonal_procrustes_and_spatial_procrustes():
    x, y = X0.numpy(), Y0.numpy()
    xn, yn = x - x.mean(0), y - y.mean(0)
    xn, yn = xn / np.linalg.norm(xn), yn / np.linalg.norm(yn)
    r, _ = scipy.linalg.orthogonal_procrustes(yn, xn)
    residual = np.linalg.norm(xn - yn @ r) ** 2
    s = sim.procrustes(x, y)
    assert s == pytest.approx(1 - residual / 2, abs=1e-12)
    assert sim.procrustes_distance(x, y, "euclidean") == pytest.approx(np.sqrt(residual), abs=1e-10)
    assert sim.procrustes_distance(x, y) == pytest.approx(np.arccos(s), abs=1e-12)
    # scipy.spatial.procrustes' disparity is 1 - similarity^2 (not 1 - similarity)
    assert scipy.spatial.procrustes(x, y)[2] == pytest.approx(1 - s ** 2, abs=1e-12)


def test_procrustes_handles_different_widths_as_zero_padding():
    wide = torch.cat([Y0, randn(80, 3, seed=9)], dim=1)
    padded = torch.cat([X0, torch.zeros(80, 3, dtype=torch.float64)], dim=1)
    assert sim.procrustes(X0, wide) == pytest.approx(sim.procrustes(padded, wide), abs=1e-12)


@pytest.mark.parametrize("kind", ["correlation", "euclidean", "cosine"])
def test_rdm_is_scipy_pdist(kind):
    torch.testing.assert_close(sim.rdm(X0, kind), torch.as_tensor(scipy.spatial.distance.pdist(X0.numpy(), kind)))


@pytest.mark.parametrize("compare,ref", [("spearman", scipy.stats.spearmanr), ("pearson", scipy.stats.pearsonr),
                                         ("kendall", scipy.stats.kendalltau)])
def test_rsa_is_scipy_correlation_of_pdist(compare, ref):
    dx = scipy.spatial.distance.pdist(X0[:30].numpy(), "euclidean")
    dy = scipy.spatial.distance.pdist(Y0[:30].round(decimals=1).numpy(), "euclidean")  # ties in the ranks
    ours = sim.rsa(X0[:30], Y0[:30].round(decimals=1), rdm="euclidean", compare=compare)
    assert ours == pytest.approx(ref(dx, dy).statistic, abs=1e-12)


def test_svcca_equals_mean_canonical_correlation_from_covariances():
    # reference: CCA from covariance matrices (Hotelling 1936), whitening with inverse square roots
    x, y = X0.numpy() - X0.numpy().mean(0), Y0.numpy() - Y0.numpy().mean(0)
    wx = scipy.linalg.fractional_matrix_power(x.T @ x, -0.5)
    wy = scipy.linalg.fractional_matrix_power(y.T @ y, -0.5)
    rho = np.linalg.svd(wx @ x.T @ y @ wy, compute_uv=False)
    assert sim.svcca(X0, Y0, keep=1.0) == pytest.approx(rho.mean(), abs=1e-10)


def _pwcca_reference(acts1, acts2):
    """Morcos et al.'s compute_pwcca (google/svcca pwcca.py) transcribed for centred (n, d) data with
    epsilon = 0: covariance-whitened CCA, canonical variates of the side with fewer neurons,
    QR-orthonormalised, weights = sum over that side's neurons of |<variate, neuron>|."""
    x, y = acts1 - acts1.mean(0), acts2 - acts2.mean(0)
    wx = scipy.linalg.fractional_matrix_power(x.T @ x, -0.5)
    wy = scipy.linalg.fractional_matrix_power(y.T @ y, -0.5)
    u, rho, vt = np.linalg.svd(wx @ x.T @ y @ wy, full_matrices=False)
    if x.shape[1] <= y.shape[1]:
        variates, acts = x @ wx @ u, x
    else:
        variates, acts = y @ wy @ vt.T, y
    p, _ = np.linalg.qr(variates)
    weights = np.abs(p.T @ acts).sum(1)
    weights = weights / weights.sum()
    return float((weights * rho).sum())


@pytest.mark.parametrize("d2", [4, 6, 9])
def test_pwcca_matches_morcos_reference_algorithm(d2):
    y = torch.cat([Y0, randn(80, 3, seed=11)], dim=1)[:, :d2]
    assert sim.pwcca(X0, y) == pytest.approx(_pwcca_reference(X0.numpy(), y.numpy()), abs=1e-9)


# -- units and sets -------------------------------------------------------------------------
def test_match_units_recovers_a_known_unit_permutation_and_agrees_with_brute_force():
    a = randn(200, 5, seed=12)
    perm = torch.tensor([3, 0, 4, 1, 2])
    b = a[:, perm] + 0.3 * randn(200, 5, seed=13)
    match = sim.match_units(a, b)
    assert {tuple(p) for p in match.pairs.tolist()} == {(int(perm[j]), j) for j in range(5)}
    corr = np.corrcoef(a.numpy().T, b.numpy().T)[:5, 5:]
    best = max(itertools.permutations(range(5)), key=lambda c: sum(corr[i, c[i]] for i in range(5)))
    assert match.correlations.sum() == pytest.approx(sum(corr[i, best[i]] for i in range(5)), abs=1e-12)
    torch.testing.assert_close(match.correlations, torch.as_tensor(corr[match.pairs[:, 0], match.pairs[:, 1]]))


def test_match_units_excludes_and_lists_constant_units():
    a = randn(50, 4, seed=14)
    a[:, 1] = 0.0  # a dead unit
    b = torch.cat([a[:, [2, 0]], torch.full((50, 1), 3.0, dtype=torch.float64), a[:, [3]]], dim=1)
    match = sim.match_units(a, b, method="argmax")
    assert match.constant_a.tolist() == [1] and match.constant_b.tolist() == [2]
    assert match.pairs.tolist() == [[0, 1], [2, 0], [3, 3]]
    assert torch.isfinite(match.correlations).all()
    assert "1 constant units in A, 1 in B left out" in repr(match)


def test_jaccard_and_topk():
    assert sim.jaccard(torch.tensor([1, 2, 3]), {3, 4}) == 0.25
    assert sim.jaccard_topk(np.array([0.9, 0.1, 0.8, 0.7]), np.array([0.9, 0.8, 0.1, 0.7]), k=2) == pytest.approx(1 / 3)
    with pytest.raises(InputError, match="jaccard of two empty sets is undefined"):
        sim.jaccard([], [])


def test_jaccard_topk_refuses_a_k_that_cuts_through_tied_zeros():
    sae_acts = torch.tensor([0.0, 2.0, 0.0, 1.5, 0.0, 0.0])
    with pytest.raises(InputError, match=r"top-3 of x is ambiguous: 2 entries are larger than 0 and 4 are tied"):
        sim.jaccard_topk(sae_acts, sae_acts, k=3)
    with pytest.raises(SelectionError, match="k=7 but x has 6 entries"):
        sim.jaccard_topk(torch.arange(6.0), sae_acts, k=7)


# -- pitfalls ------------------------------------------------------------------------------
def test_cca_refuses_features_at_least_samples_with_the_numbers():
    x, y = randn(20, 30, seed=15), randn(20, 30, seed=16)
    with pytest.raises(InputError, match=r"svcca: X keeps \d+ and Y keeps \d+ dimensions but there are only 20 rows"):
        sim.svcca(x, y)
    with pytest.raises(InputError, match=r"pwcca: X keeps 19 and Y keeps 19 dimensions .* at least 19 canonical "
                                         r"correlations are exactly 1 .* Use cka"):
        sim.pwcca(x, y)
    assert 0 < sim.svcca(x, y, dims=5) < 1  # the suggested fix works


def test_debiased_cka_refuses_fewer_than_four_rows():
    with pytest.raises(InputError, match=r"cka\(debiased=True\) needs at least 4 rows, got 3"):
        sim.cka(randn(3, 2), randn(3, 2, seed=1), debiased=True)


def test_constant_units_are_dropped_from_cca_with_a_warning():
    x = torch.cat([X0, torch.full((80, 2), 7.0, dtype=torch.float64)], dim=1)
    with pytest.warns(TlInterpWarning, match=r"svcca: 2 of 8 units of X are constant \(indices \[6, 7\]\)"):
        assert sim.svcca(x, Y0) == pytest.approx(sim.svcca(X0, Y0), abs=1e-12)


@pytest.mark.parametrize("fn", [sim.cka, sim.svcca, sim.pwcca, sim.procrustes, sim.rsa, sim.mutual_knn])
def test_every_metric_refuses_mismatched_rows_and_non_finite_input(fn):
    with pytest.raises(ShapeError, match="X has 80 rows and Y has 79"):
        fn(X0, Y0[:79])
    bad = Y0.clone()
    bad[4, 2] = float("inf")
    with pytest.raises(InputError, match=r"Y has 1 NaN/Inf entries \(first at index \(4, 2\)\)"):
        fn(X0, bad)


def test_constant_inputs_and_bad_options_are_refused():
    with pytest.raises(InputError, match="every row of Y is the same"):
        sim.cka(X0, torch.ones(80, 3))
    flat = X0.clone()
    flat[5] = 1.0
    with pytest.raises(InputError, match=r"rsa: 1 rows of X are constant \(rows \[5\]\)"):
        sim.rsa(flat, Y0)
    with pytest.raises(SelectionError, match=r"k=79 with 80 rows; k must be in \[1, n - 2\] = \[1, 78\]"):
        sim.mutual_knn(X0, Y0, k=79)
    with pytest.raises(OptionError, match="kernel='poly' is not one of"):
        sim.cka(X0, Y0, kernel="poly")
    with pytest.raises(ShapeError, match=r"X must be \(n, features\), got shape \(80,\)"):
        sim.procrustes(X0[:, 0], Y0)


@pytest.mark.parametrize("debiased", [False, True])
def test_cka_feature_space_and_gram_forms_agree(debiased):
    from tl_interp.similarity._kernels import _centred_grams, _feature_terms, _gram_terms

    xc, yc = X0 - X0.mean(0), Y0 - Y0.mean(0)
    features = torch.stack(_feature_terms(xc, yc, debiased))
    grams = torch.stack(_gram_terms(*_centred_grams(xc, yc, "linear", 0.5, debiased)))
    torch.testing.assert_close(features, grams, rtol=1e-10, atol=1e-8)


def test_match_units_equals_scipy_linear_sum_assignment_on_rectangular_correlations():
    a, b = randn(60, 7, seed=40), randn(60, 4, seed=41)
    b = b + a[:, :4] * 0.5
    corr = np.corrcoef(a.numpy().T, b.numpy().T)[:7, 7:]
    rows, cols = scipy.optimize.linear_sum_assignment(corr, maximize=True)
    match = sim.match_units(a, b)
    assert match.pairs.tolist() == [[int(r), int(c)] for r, c in zip(rows, cols)]
    assert float(match.correlations.sum()) == pytest.approx(corr[rows, cols].sum(), abs=1e-12)
