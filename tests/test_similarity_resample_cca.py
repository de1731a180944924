"""The SVD family's batched bootstraps (SVCCA, PWCCA) take the cheaper whitening where it is exact and
still equal the loop: Cholesky factors where every direction is kept, certified by a trace bound or by
the exact eigenvalues, and the loop where a direction holds under 1e-6 of the top variance.
References: the metric on ``X[rows]`` (the loop), torch's eigendecomposition."""

import functools

import pytest
import torch

from tl_interp import similarity as sim
from tl_interp import stats
from tl_interp.similarity._whiten import WELL_KEPT, cholesky_whitening, kept_directions
from tl_interp.stats._bootstrap import bootstrap_evaluator


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def scaled(n, scales, seed=0):
    """Rows whose units have the given scales (the covariance's condition ~ (max / min scale)^2), and a
    Y related to them."""
    x = randn(n, len(scales), seed=seed) * torch.tensor(scales, dtype=torch.float64)
    return x, x[:, :3] @ randn(3, 4, seed=seed + 1) + randn(n, 4, seed=seed + 2)


def run(form, options, x, y, index):
    calls = []
    f = functools.partial(form, **options)

    def one(b, rows):
        calls.append(b)
        return f(x[rows], y[rows])

    evaluate, _ = bootstrap_evaluator(f, x, y, one=one)
    loop = torch.tensor([f(x[r], y[r]) for r in index], dtype=torch.float64)
    return evaluate(index, 0), loop, calls, evaluate


FORMS = [(sim.pwcca, {}), (sim.svcca, {"keep": 1.0})]


WELL_CONDITIONED = [1.0, 2.0, 0.5, 3.0, 1.5]
TRACE_BOUND_CANT_TELL = [1.0, 1.0, 1.0, 1.0, 300.0, 300.0]  # condition ~1e5: tr(C) tr(C^-1) ~ 7e5 > 5e5


def test_the_trace_bound_cannot_certify_that_case_but_its_eigenvalues_do():
    x, _ = scaled(60, TRACE_BOUND_CANT_TELL)
    cov = (x - x.mean(0)).T @ (x - x.mean(0))
    bound = float(cov.trace() * torch.linalg.inv(cov).trace())
    lam = torch.linalg.eigvalsh(cov)
    assert bound * WELL_KEPT > 0.5 and lam[0] > WELL_KEPT * lam[-1]
    assert bool(cholesky_whitening(cov[None])[2][0])


@pytest.mark.parametrize("scales", [WELL_CONDITIONED, TRACE_BOUND_CANT_TELL], ids=["well", "eigenvalues decide"])
@pytest.mark.parametrize("form, options", FORMS)
def test_every_direction_kept_whitens_by_cholesky_and_equals_the_loop_without_calling_it(form, options, scales):
    x, y = scaled(60, scales)
    index = stats.bootstrap_indices(60, 60, seed=1)
    fast, loop, calls, _ = run(form, options, x, y, index)
    assert calls == []
    torch.testing.assert_close(fast, loop, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("form, options", FORMS)
def test_a_direction_under_a_millionth_of_the_top_variance_sends_the_resample_to_the_loop(form, options):
    x, y = scaled(50, [1.0, 1.0, 1.0, 3e3, 1e4])  # condition ~1e8
    index = stats.bootstrap_indices(50, 6, seed=3)
    fast, loop, calls, _ = run(form, options, x, y, index)
    assert calls == list(range(6))
    torch.testing.assert_close(fast, loop, rtol=0, atol=0)  # the loop's own values


def test_the_cholesky_certificate_agrees_with_the_eigendecomposition_away_from_the_threshold():
    q = torch.linalg.qr(randn(8, 6, 6, seed=4))[0]
    conditions = torch.tensor([1e1, 1e3, 1e5, 3e5, 3e6, 1e8, 1e12, 1e20], dtype=torch.float64)
    lam = torch.stack([torch.logspace(0, -float(c.log10()), 6, dtype=torch.float64) for c in conditions])
    cov = q @ torch.diag_embed(lam) @ q.mT
    inverse, factor, sure = cholesky_whitening(cov)
    assert sure.tolist() == kept_directions(cov, 1.0, None)[2].tolist() == [True] * 4 + [False] * 4
    eye = torch.eye(6, dtype=torch.float64).expand(4, 6, 6)
    torch.testing.assert_close(inverse[:4] @ cov[:4] @ inverse[:4].mT, eye, rtol=0, atol=1e-9)
    torch.testing.assert_close(factor[:4] @ factor[:4].mT, cov[:4], rtol=1e-12, atol=1e-15)


def test_svcca_truncating_the_variance_keeps_the_eigendecomposition():
    x, y = scaled(60, [1.0, 2.0, 0.5, 3.0, 1.5])
    index = stats.bootstrap_indices(60, 30, seed=5)
    for options, name in (({"keep": 0.9}, "_svcca_resampled"), ({"dims": 3}, "_svcca_resampled"),
                          ({"keep": 1.0}, "_svcca_every_direction")):
        fast, loop, calls, evaluate = run(sim.svcca, options, x, y, index)
        torch.testing.assert_close(fast, loop, rtol=1e-9, atol=1e-12)
        from tl_interp.similarity._resample_cca import _svcca_bootstrap
        assert _svcca_bootstrap(x, y, **options).evaluate.__name__ == name


def test_weighted_symmetric_products_are_exactly_symmetric_and_equal_the_gathered_rows():
    from tl_interp.similarity._resample_products import weighted_products
    from tl_interp.stats._bootstrap import resample_counts
    a, b = randn(50, 20, seed=6), randn(50, 7, seed=7)
    index = stats.bootstrap_indices(50, 24, seed=8)
    xx, xy = weighted_products(resample_counts(index, 50), [(a, a), (a, b)])  # 24 >= 20: outer products, 8 row blocks
    assert torch.equal(xx, xx.mT)
    xr, yr = a[index] - a[index].mean(1, keepdim=True), b[index] - b[index].mean(1, keepdim=True)
    torch.testing.assert_close(xx, xr.mT @ xr, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(xy, xr.mT @ yr, rtol=1e-12, atol=1e-12)


def test_compare_with_cholesky_whitening_is_the_same_at_any_finite_scale():
    x, y = scaled(40, [1.0, 2.0, 0.5, 3.0])
    kwargs = dict(measures=("svcca", "pwcca"), options={"svcca": {"keep": 1.0}}, n_permutations=19, n_boot=60,
                  progress=False)
    ref = sim.compare(x, y, **kwargs)
    index = stats.bootstrap_indices(40, 60, seed=0)
    loop = torch.tensor([[sim.svcca(x[r], y[r], keep=1.0), sim.pwcca(x[r], y[r])] for r in index], dtype=torch.float64)
    low, high = stats.percentile_interval(loop, 0.05, dim=0)
    torch.testing.assert_close(ref.extras["ci_low"], low, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(ref.extras["ci_high"], high, rtol=1e-9, atol=1e-12)
    for scale in (1e-200, 1e200):
        res = sim.compare(x * scale, y / scale, **kwargs)
        for key in ("ci_low", "ci_high", "null", "p_value"):
            torch.testing.assert_close(res.extras[key], ref.extras[key], rtol=1e-9, atol=1e-12)
