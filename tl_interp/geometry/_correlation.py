"""Correlation of a per-pair geometric quantity with an external per-pair score.

``pearson``, ``spearman`` (Pearson's r of average ranks, as ``scipy.stats.spearmanr``) and
``kendall`` (tau-b, as ``scipy.stats.kendalltau``) on two 1-D samples, each registered with a
vectorised pairings null so that ``correlate`` gets permutation p-values from
``ti.stats.permutation_test`` without one Python call per permutation. Re-pairing keeps each
sample's values (and ranks), so the nulls gather fixed standardised values (or sign matrices).
"""

from collections.abc import Sequence
from typing import Any

import scipy.stats
import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, OptionError, ShapeError
from tl_interp.stats import PermutationTest, PreparedNull, permutation_indices, permutation_test, register_null
from tl_interp.stats._inputs import check_finite, unit_scale

__all__ = ["pearson", "spearman", "kendall", "correlate", "CORRELATIONS"]

_CHUNK_ENTRIES = 1 << 22


def _pair(x: Tensor, y: Tensor, what: str) -> tuple[Tensor, Tensor]:
    a = check_finite(torch.as_tensor(x).detach().double().flatten().cpu(), f"{what}: x", "drop those pairs first")
    b = check_finite(torch.as_tensor(y).detach().double().flatten().cpu(), f"{what}: y", "drop those pairs first")
    if a.shape != b.shape:
        raise ShapeError(f"{what}: the two samples must pair up, got {a.numel()} and {b.numel()} values")
    if a.numel() < 3:
        raise InputError(f"{what} needs at least 3 pairs, got {a.numel()}")
    return a, b


def _standard(v: Tensor, what: str) -> Tensor:
    v = unit_scale(v)[0]  # exact; correlations are scale-free, and squares of 1e200 would overflow
    sd = v.std(correction=0)
    if not bool(sd > 0):
        raise InputError(f"{what}: one sample is constant ({float(v[0]):.6g} everywhere); a correlation with it "
                         "is undefined")
    return (v - v.mean()) / sd


def _ranks(v: Tensor) -> Tensor:
    return torch.as_tensor(scipy.stats.rankdata(v.numpy()), dtype=torch.float64)


@checked
def pearson(x: Tensor, y: Tensor) -> Tensor:
    """Pearson's r of two paired 1-D samples (0-d float64).

    Example:
        >>> import torch
        >>> round(float(pearson(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 7.0]))), 4)
        0.9934
    """
    a, b = _pair(x, y, "pearson")
    return (_standard(a, "pearson") * _standard(b, "pearson")).mean().clamp(-1.0, 1.0)


@checked
def spearman(x: Tensor, y: Tensor) -> Tensor:
    """Spearman's rho: Pearson's r of average ranks (0-d float64).

    Example:
        >>> import torch
        >>> float(spearman(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 4.0, 9.0, 16.0])))
        1.0
    """
    a, b = _pair(x, y, "spearman")
    return pearson(_ranks(a), _ranks(b))


def _signs(v: Tensor) -> Tensor:
    return torch.sign(v[:, None] - v[None, :])


@checked
def kendall(x: Tensor, y: Tensor) -> Tensor:
    """Kendall's tau-b, ties handled as scipy's ``kendalltau`` (0-d float64).

    Example:
        >>> import torch
        >>> float(kendall(torch.tensor([1.0, 2.0, 3.0, 4.0]), torch.tensor([1.0, 3.0, 2.0, 4.0])))
        0.6666666666666666
    """
    a, b = _pair(x, y, "kendall")
    sa, sb = _signs(a), _signs(b)
    denominator = ((sa ** 2).sum() * (sb ** 2).sum()).sqrt()
    if not bool(denominator > 0):
        raise InputError("kendall: one sample is constant; a rank correlation with it is undefined")
    return ((sa * sb).sum() / denominator).clamp(-1.0, 1.0)


def _gathered_null(za: Tensor, zb: Tensor) -> PreparedNull:
    def _correlation_permuted(perms: Tensor) -> Tensor:
        return (zb[perms] @ za / za.numel()).clamp(-1.0, 1.0)

    return PreparedNull(_correlation_permuted, max(1, _CHUNK_ENTRIES // za.numel()))


@register_null(pearson)
def _pearson_null(x: Tensor, y: Tensor) -> PreparedNull:
    a, b = _pair(x, y, "pearson")
    return _gathered_null(_standard(a, "pearson"), _standard(b, "pearson"))


@register_null(spearman)
def _spearman_null(x: Tensor, y: Tensor) -> PreparedNull:
    a, b = _pair(x, y, "spearman")
    return _gathered_null(_standard(_ranks(a), "spearman"), _standard(_ranks(b), "spearman"))


@register_null(kendall)
def _kendall_null(x: Tensor, y: Tensor) -> PreparedNull:
    a, b = _pair(x, y, "kendall")
    sa, sb = _signs(a), _signs(b)
    denominator = ((sa ** 2).sum() * (sb ** 2).sum()).sqrt()

    def _kendall_permuted(perms: Tensor) -> Tensor:
        return ((sb[perms[:, :, None], perms[:, None, :]] * sa).sum((1, 2)) / denominator).clamp(-1.0, 1.0)

    n = a.numel()
    return PreparedNull(_kendall_permuted, max(1, _CHUNK_ENTRIES // (n * n)))


CORRELATIONS = {"pearson": pearson, "spearman": spearman, "kendall": kendall}


@checked
def correlate(x: Any, y: Any, *, methods: Sequence[str] = ("pearson", "spearman", "kendall"),
              n_permutations: int = 2000, alternative: str = "two-sided", seed: int = 0,
              permutations: Tensor | None = None) -> dict[str, PermutationTest]:
    """Correlations of paired samples with permutation p-values (re-pairing ``y`` with ``x``).

    Every method is tested against the same permutations (``permutation_indices(n, B, seed=seed)``).

    Args:
        x, y: paired 1-D samples (tensors or arrays).
        methods: any of ``"pearson"``, ``"spearman"``, ``"kendall"``.
        n_permutations: permutations B; ``alternative``: as ``ti.stats.permutation_test``.
        seed: seed of the permutations; ``permutations``: explicit ``(B, n)`` orders instead.

    Returns:
        ``{method: PermutationTest}`` (statistic, p_value, null).

    Example:
        >>> import torch
        >>> x = torch.arange(10.0)
        >>> tests = correlate(x, x ** 2, n_permutations=499)
        >>> round(float(tests["spearman"].statistic), 3), float(tests["spearman"].p_value) < 0.01
        (1.0, True)
    """
    unknown = [m for m in methods if m not in CORRELATIONS]
    if unknown or not methods:
        raise OptionError(f"methods={list(methods)!r}; choose from {', '.join(CORRELATIONS)}")
    a, b = _pair(torch.as_tensor(x), torch.as_tensor(y), "correlate")
    perms = permutation_indices(a.numel(), n_permutations, seed=seed) if permutations is None else permutations
    return {m: permutation_test(CORRELATIONS[m], a, b, permutations=perms, alternative=alternative)
            for m in methods}
