"""Paired t-test and effect sizes: Student's paired t, Cohen's d for paired data, Hedges' g.

- ``paired_ttest``: t = mean(d) / (sd(d) / sqrt(n)) on the differences d = x - y, n - 1 degrees
  of freedom, p from Student's t distribution; equal to ``scipy.stats.ttest_rel(x, y, axis=-1)``.
  Constant differences are refused (``InputError`` naming the tests): scipy returns t = +-inf
  and p = 0 for a non-zero constant, t = NaN and p = NaN for all-zero differences, and a
  NaN p-value is not a test (nor is an infinite t from differences without variation).
- ``cohens_d_paired``: mean(d) / sd(d, ddof=1) (Cohen 1988's d_z), = t / sqrt(n).
- ``hedges_g``: Cohen's d of two independent samples with the pooled standard deviation,
  times the exact small-sample correction J(m) = Gamma(m/2) / (sqrt(m/2) Gamma((m-1)/2)),
  m = n_a + n_b - 2 (Hedges 1981; Hedges & Olkin 1985, eq. 5.4.9).

Pairs sit on the last axis; every leading axis (layers, heads) is a separate test.
"""

from dataclasses import dataclass

import scipy.special
import torch
from torch import Tensor

from tl_interp._checks import checked, renamed
from tl_interp.errors import InputError, ShapeError
from tl_interp.stats._inputs import ArrayLike, as_float64, check_choice, unit_scale

__all__ = ["TTest", "paired_ttest", "cohens_d_paired", "hedges_g"]

_ALTERNATIVES = ("two-sided", "greater", "less")


@dataclass(frozen=True)
class TTest:
    """A paired t-test per leading index: tensors shaped like the inputs without their last axis."""

    statistic: Tensor
    p_value: Tensor
    df: Tensor
    mean_difference: Tensor
    cohens_d: Tensor
    alternative: str = "two-sided"


def _paired(x: ArrayLike, y: ArrayLike, what: str) -> Tensor:
    a, b = as_float64(x, "x"), as_float64(y, "y")
    if a.shape != b.shape:
        raise ShapeError(f"{what}: x and y must pair up, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    if a.shape[-1] < 3:
        raise InputError(f"{what} needs at least 3 pairs on the last axis, got {a.shape[-1]}")
    return a - b


@renamed(a="x", b="y")
@checked
def paired_ttest(x: ArrayLike, y: ArrayLike, *, alternative: str = "two-sided") -> TTest:
    """Student's paired t-test of mean(x - y) = 0, pairs on the last axis.

    Args:
        x, y: paired samples ``(..., n)``; every leading index is its own test.
        alternative: ``"two-sided"``, ``"greater"`` (mean(x - y) > 0) or ``"less"``.

    Returns:
        ``TTest`` with statistic, p_value, df (n - 1), mean_difference and cohens_d.

    Example:
        >>> import torch
        >>> x = torch.tensor([5.1, 4.9, 6.2, 5.8, 6.0])
        >>> t = paired_ttest(x, x - torch.tensor([0.4, 0.6, 0.5, 0.3, 0.7]))
        >>> round(float(t.statistic), 3), float(t.df)
        (7.071, 4.0)
    """
    check_choice(alternative, "alternative", _ALTERNATIVES)
    d = _paired(x, y, "paired_ttest")
    n = d.shape[-1]
    # t and d_z are scale-free: compute them at unit scale per test (exact), so 1e200 can't overflow
    scaled, exponent = unit_scale(d, dim=-1)
    mean, sd = scaled.mean(-1), scaled.std(-1, correction=1)
    _refuse_constant(d, sd)
    t = mean / (sd / n ** 0.5)
    df = torch.full_like(t, n - 1.0)
    cdf = torch.as_tensor(scipy.special.stdtr(df.numpy(), t.numpy()), dtype=torch.float64)
    sf = torch.as_tensor(scipy.special.stdtr(df.numpy(), -t.numpy()), dtype=torch.float64)
    p = {"greater": sf, "less": cdf, "two-sided": (2 * torch.minimum(cdf, sf)).clamp(max=1.0)}[alternative]
    return TTest(statistic=t, p_value=p, df=df, mean_difference=torch.ldexp(mean, exponent.squeeze(-1)),
                 cohens_d=mean / sd, alternative=alternative)


def _refuse_constant(d: Tensor, sd: Tensor) -> None:
    """No t-test of differences without variation: t would be +-inf (p = 0) or 0/0 (p = NaN)."""
    bad = sd == 0
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0]) if bad.ndim else ()
        value = float(d[first][0])
        which = "all zero (x and y are equal there: t = 0/0)" if value == 0 else \
            f"all {value:.6g} (t = {'+' if value > 0 else '-'}inf, p = 0)"
        raise InputError(f"paired_ttest: the differences x - y have no variation in {int(bad.sum())} of "
                         f"{sd.numel()} tests (first at index {first}: {which}); a t-test needs differences that "
                         "vary across pairs. Check that x and y are not copies (e.g. the same positions), or leave "
                         "those units out")


@renamed(a="x", b="y")
@checked
def cohens_d_paired(x: ArrayLike, y: ArrayLike) -> Tensor:
    """Cohen's d for paired samples: mean(x - y) / sd(x - y, ddof=1) over the last axis.

    Example:
        >>> import torch
        >>> round(float(cohens_d_paired(torch.tensor([2.0, 3.0, 5.0]), torch.tensor([1.0, 1.0, 1.0]))), 4)
        1.5275
    """
    d = unit_scale(_paired(x, y, "cohens_d_paired"), dim=-1)[0]  # scale-free: exact unit scale, no overflow
    return d.mean(-1) / d.std(-1, correction=1)


@renamed(a="x", b="y")
@checked
def hedges_g(x: ArrayLike, y: ArrayLike) -> Tensor:
    """Hedges' g of two independent samples (last axis): bias-corrected standardised mean difference.

    g = J(m) (mean(x) - mean(y)) / s_pooled with m = n_x + n_y - 2 and the exact J of Hedges (1981).

    Example:
        >>> import torch
        >>> g = hedges_g(torch.tensor([5.0, 6.0, 7.0, 8.0]), torch.tensor([1.0, 2.0, 3.0, 4.0]))
        >>> round(float(g), 4)
        2.6913
    """
    x, y = as_float64(x, "x"), as_float64(y, "y")
    if x.shape[:-1] != y.shape[:-1]:
        raise ShapeError(f"hedges_g: leading axes must match, got {tuple(x.shape)} and {tuple(y.shape)}")
    na, nb = x.shape[-1], y.shape[-1]
    if na < 2 or nb < 2:
        raise InputError(f"hedges_g needs at least 2 values per sample, got {na} and {nb}")
    m = na + nb - 2
    # scale-free: one exact power of two per test for both samples, so 1e200 can't overflow the variances
    exponent = unit_scale(torch.cat([x, y], dim=-1), dim=-1)[1]
    x, y = torch.ldexp(x, -exponent), torch.ldexp(y, -exponent)
    pooled = (((na - 1) * x.var(-1, correction=1) + (nb - 1) * y.var(-1, correction=1)) / m).sqrt()
    j = torch.exp(torch.lgamma(torch.tensor(m / 2, dtype=torch.float64))
                  - torch.lgamma(torch.tensor((m - 1) / 2, dtype=torch.float64))) / (m / 2) ** 0.5
    return j * (x.mean(-1) - y.mean(-1)) / pooled
