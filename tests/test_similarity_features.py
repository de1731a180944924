"""SAE feature spaces (seed 003): features paired by activation correlation, decoder directions compared
against random pairings. Checked on planted SAEs (a known permutation + rotation of one another) and
against an independent numpy/scipy computation of every score and null."""

import numpy as np
import pytest
import scipy.optimize
import scipy.spatial.distance
import scipy.stats
import torch

import tl_interp as ti
from tl_interp.errors import InputError, OptionError, ShapeError

pytestmark = pytest.mark.filterwarnings("ignore::tl_interp.errors.TlInterpWarning")


def _sparse_codes(n: int, d_sae: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.relu(torch.randn(n, d_sae, generator=g) - 0.8)


def _planted(seed: int = 0, n: int = 400, d_sae: int = 48, d_a: int = 24, d_b: int = 32):
    """SAE B = SAE A with its features permuted and its decoder rotated into a wider space."""
    g = torch.Generator().manual_seed(seed)
    codes = _sparse_codes(n, d_sae, seed)
    dec = torch.randn(d_sae, d_a, generator=g)
    perm = torch.randperm(d_sae, generator=g)
    Q = torch.linalg.qr(torch.randn(d_b, d_b, generator=g))[0][:, :d_a].T  # (d_a, d_b), orthonormal rows
    return codes, codes[:, perm] * 2.5, dec, dec[perm] @ Q, perm


def test_planted_permuted_and_rotated_saes_pair_exactly_and_score_as_identical() -> None:
    codes_a, codes_b, dec_a, dec_b, perm = _planted()
    res = ti.similarity.feature_spaces(codes_a, codes_b, dec_a, dec_b, n_permutations=199, n_boot=10)
    assert res.pairs.shape[0] == codes_a.shape[1]
    assert (res.pairs[:, 0] == perm[res.pairs[:, 1]]).all()  # B's feature j is A's feature perm[j]
    torch.testing.assert_close(res.correlations, torch.ones_like(res.correlations), atol=1e-12, rtol=0)
    scores = res.scores()
    for metric in ("svcca", "rsa", "procrustes", "jaccard"):
        assert scores[metric]["score"] == pytest.approx(1.0, abs=1e-9), metric
        assert scores[metric]["p_value"] == pytest.approx(1 / 200), metric  # no random pairing ties it
        assert scores[metric]["null_q95"] < 0.9, metric
    assert "48 feature pairs" in res.summary() and "held-out" in res.summary()
    assert len(repr(res)) < 200


def _numpy_reference(ca, cb, da, db, n_fit, dims, perms):
    """Every step by hand: Pearson pairing + Hungarian, SVCCA, cosine-RSA, Procrustes, Jaccard, nulls."""
    corr = np.corrcoef(ca[:n_fit].T, cb[:n_fit].T)[: ca.shape[1], ca.shape[1]:]
    rows, cols = scipy.optimize.linear_sum_assignment(corr, maximize=True)
    X, Y = da[rows], db[cols]

    def svcca(x, y):
        bases = []
        for m in (x, y):
            u, _, _ = np.linalg.svd(m - m.mean(0), full_matrices=False)
            bases.append(u[:, :dims])
        return np.linalg.svd(bases[0].T @ bases[1], compute_uv=False).mean()

    def rsa(x, y):
        return scipy.stats.spearmanr(scipy.spatial.distance.pdist(x, "cosine"),
                                     scipy.spatial.distance.pdist(y, "cosine")).statistic

    def procrustes(x, y):
        xc, yc = x - x.mean(0), y - y.mean(0)
        xc, yc = xc / np.linalg.norm(xc), yc / np.linalg.norm(yc)
        return np.linalg.svd(xc.T @ yc, compute_uv=False).sum()

    def jaccard(a_codes, b_codes):
        values = []
        for ra, rb in zip(a_codes, b_codes):
            sa, sb = set(np.flatnonzero(ra > 0)), set(np.flatnonzero(rb > 0))
            if sa | sb:
                values.append(len(sa & sb) / len(sa | sb))
        return np.mean(values)

    ja, jb = ca[n_fit:][:, rows], cb[n_fit:][:, cols]
    out = {}
    for name, fn, args in (("svcca", svcca, (X, Y)), ("rsa", rsa, (X, Y)), ("procrustes", procrustes, (X, Y)),
                           ("jaccard", lambda a, b: jaccard(a.T, b.T), (ja.T, jb.T))):
        score = fn(*args)
        null = np.array([fn(args[0], args[1][p]) for p in perms])
        out[name] = (score, null, (1 + (null >= score - 1e-12).sum()) / (len(perms) + 1))
    return rows, cols, out


def test_scores_and_random_pairing_nulls_equal_a_numpy_reference() -> None:
    g = torch.Generator().manual_seed(3)
    shared = _sparse_codes(300, 30, 1)
    ca = torch.cat([shared[:, :20] + 0.3 * _sparse_codes(300, 20, 2), _sparse_codes(300, 10, 4)], 1)
    cb = torch.cat([shared[:, :20][:, torch.randperm(20, generator=g)] + 0.3 * _sparse_codes(300, 20, 5),
                    _sparse_codes(300, 14, 6)], 1)
    da, db = torch.randn(30, 12, generator=g), torch.randn(34, 10, generator=g)
    B = 60
    res = ti.similarity.feature_spaces(ca, cb, da, db, n_permutations=B, n_boot=5, seed=7)
    k = res.pairs.shape[0]
    dims = res.settings["options"]["svcca"]["dims"]
    perms = ti.stats.permutation_indices(k, B, seed=7).numpy()
    rows, cols, ref = _numpy_reference(ca.double().numpy(), cb.double().numpy(), da.double().numpy(),
                                       db.double().numpy(), 150, dims, perms)
    assert res.pairs[:, 0].tolist() == rows.tolist() and res.pairs[:, 1].tolist() == cols.tolist()
    for metric, (score, null, p) in ref.items():
        got = res.scores()[metric]
        assert got["score"] == pytest.approx(score, abs=1e-9), metric
        assert got["null_mean"] == pytest.approx(null.mean(), abs=1e-9), metric
        assert got["p_value"] == pytest.approx(p), metric


def test_min_correlation_keeps_only_confident_pairs_and_refuses_when_too_few_remain() -> None:
    codes_a, codes_b, dec_a, dec_b, _ = _planted(seed=1)
    noisy = codes_b + 3 * _sparse_codes(codes_b.shape[0], codes_b.shape[1], 9)
    res = ti.similarity.feature_spaces(codes_a, noisy, dec_a, dec_b, min_correlation=0.5, n_permutations=20, n_boot=2)
    assert (res.correlations >= 0.5).all() and res.pairs.shape[0] < res.match.pairs.shape[0]
    with pytest.raises(InputError, match=r"feature pairs have activation correlation >= 0.999.*lower min_correlation"):
        ti.similarity.feature_spaces(codes_a, noisy, dec_a, dec_b, min_correlation=0.999, n_permutations=20, n_boot=2)


def test_inputs_are_checked_before_any_work() -> None:
    codes_a, codes_b, dec_a, dec_b, _ = _planted()
    with pytest.raises(ShapeError, match=r"decoder_b \(d_sae, d_model\) with the same d_sae"):
        ti.similarity.feature_spaces(codes_a, codes_b, dec_a, dec_b[:-1])
    with pytest.raises(ShapeError, match=r"codes_a has 400 inputs and codes_b 399"):
        ti.similarity.feature_spaces(codes_a, codes_b[:-1], dec_a, dec_b)
    with pytest.raises(OptionError, match=r"unknown \['jaccard'\].*always computed"):
        ti.similarity.feature_spaces(codes_a, codes_b, dec_a, dec_b, measures=("svcca", "jaccard"))
    with pytest.raises(OptionError, match=r"heldout=1.0 must be a share"):
        ti.similarity.feature_spaces(codes_a, codes_b, dec_a, dec_b, heldout=1.0)


def test_jaccard_on_the_pairing_inputs_is_flagged_circular() -> None:
    codes_a, codes_b, dec_a, dec_b, _ = _planted()
    res = ti.similarity.feature_spaces(codes_a, codes_b, dec_a, dec_b, heldout=0.0, n_permutations=20, n_boot=2)
    assert res.settings["jaccard_circular"] and "circular" in res.summary()


def test_paired_jaccard_batched_null_equals_the_loop() -> None:
    x, y = _sparse_codes(30, 50, 0).T, _sparse_codes(30, 50, 1).T  # (features, inputs)
    fast = ti.stats.permutation_test(ti.similarity.paired_jaccard, x, y, n_permutations=50, seed=2)
    slow = ti.stats.permutation_test(lambda a, b: ti.similarity.paired_jaccard(a, b), x, y, n_permutations=50, seed=2)
    assert fast.vectorized and not slow.vectorized
    torch.testing.assert_close(fast.null, slow.null, atol=1e-12, rtol=0)


def test_feature_spaces_saves_and_loads_with_every_part(tmp_path) -> None:
    codes_a, codes_b, dec_a, dec_b, _ = _planted(seed=3, n=200, d_sae=16)
    res = ti.similarity.feature_spaces(codes_a, codes_b, dec_a, dec_b, n_permutations=30, n_boot=4, seed=5)
    back = ti.results.Result.load(res.save(tmp_path / "spaces.safetensors"))
    assert type(back) is ti.similarity.FeatureSpaces and back.scores() == res.scores()
    assert back.summary() == res.summary() and repr(back) == repr(res) and back.settings == res.settings
    assert torch.equal(back.pairs, res.pairs) and torch.equal(back.match.constant_b, res.match.constant_b)
    assert back.match.method == res.match.method == "hungarian"
    assert torch.equal(back.jaccard.null, res.jaccard.null) and back.jaccard.seed == res.jaccard.seed
    assert back.similarity.summary() == res.similarity.summary()
    # the parts are the ones feature_spaces computed: its decoder metrics are compare's on the pairs
    direct = ti.similarity.compare(dec_a.double()[res.pairs[:, 0]], dec_b.double()[res.pairs[:, 1]],
                                   measures=res.similarity.labels["metric"], options=res.settings["options"],
                                   n_permutations=30, n_boot=4, seed=5, progress=False)
    assert torch.equal(back.similarity.values, direct.values)
    assert back.labels["measure"] == (*direct.labels["metric"], "jaccard")
