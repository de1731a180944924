"""Input conversion and checks shared by the statistics (and by ``similarity``, ``geometry``, ``weights``).

Every statistic computes in float64 (DESIGN.md, numerics) and refuses non-finite numbers with a
message naming what was non-finite, how many entries and the first one, so a NaN never turns
into a silent NaN p-value, and a NaN or inf statistic never into the smallest p-value (NaN
compares as neither larger nor smaller than the null, so it would count as beaten by none).

- ``as_float64``: arrays in, float64 CPU tensors out, NaN/Inf refused (the inputs);
- ``check_finite``: the same refusal for computed values (an observed statistic, its null,
  bootstrap replicates), naming the statistic;
- ``unit_scale``: multiply by a power of two so the largest magnitude lies in [0.5, 1): exact
  in binary floating point, so scale-invariant quantities (CKA, correlations, kurtosis) give
  the same value at any finite scale instead of overflowing at 1e200 or underflowing at 1e-200.
"""

import functools
from collections.abc import Callable
from typing import Any, TypeAlias

import numpy as np
import torch
from torch import Tensor

from tl_interp.errors import InputError, OptionError

__all__ = ["ArrayLike", "as_float64", "check_finite", "statistic_name", "unwrap_partial", "unit_scale", "centre", "check_count",
           "check_choice", "smallest_p_value"]

ArrayLike: TypeAlias = np.ndarray | Tensor

_INPUT_FIX = "remove or impute them before computing statistics"


def check_finite(values: Tensor, what: str, fix: str = _INPUT_FIX) -> Tensor:
    """Refuse ``values`` holding NaN or +-inf with an ``InputError`` naming ``what``, the counts and the fix."""
    bad = ~torch.isfinite(values)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        nan, pos = int(torch.isnan(values).sum()), int((values == float("inf")).sum())
        kinds = ", ".join(f"{c} {k}" for c, k in ((nan, "NaN"), (pos, "+inf"), (int(bad.sum()) - nan - pos, "-inf"))
                          if c)
        raise InputError(f"{what} has {int(bad.sum())} NaN/Inf entries (first at index {first}): {kinds}; {fix}")
    return values


def as_float64(x: ArrayLike, name: str, *, min_ndim: int = 1) -> Tensor:
    """``x`` as a float64 CPU tensor; refuses NaN/Inf and arrays of too low rank."""
    t = torch.as_tensor(x) if isinstance(x, np.ndarray) else x.detach()
    t = t.to(device="cpu", dtype=torch.float64)
    if t.ndim < min_ndim:
        raise InputError(f"{name} has {t.ndim} axes, at least {min_ndim} are needed (shape {tuple(t.shape)})")
    return check_finite(t, name)


def statistic_name(statistic: Callable[..., Any]) -> str:
    """A readable name of a statistic for error messages: ``cka``, ``cka(kernel='rbf')``, ``<lambda>``."""
    if isinstance(statistic, functools.partial):
        options = ", ".join(f"{k}={v!r}" for k, v in statistic.keywords.items())
        return f"{statistic_name(statistic.func)}({options})"
    return getattr(statistic, "__name__", None) or repr(statistic)


def unwrap_partial(statistic: Callable[..., Any]) -> tuple[Callable[..., Any], dict[str, Any]]:
    """The function under (nested) keyword-only ``functools.partial`` wrappers, and their keywords."""
    kwargs: dict[str, Any] = {}
    while isinstance(statistic, functools.partial) and not statistic.args:
        kwargs = {**statistic.keywords, **kwargs}
        statistic = statistic.func
    return statistic, kwargs


def unit_scale(x: Tensor, dim: int | None = None) -> tuple[Tensor, Tensor]:
    """``x * 2**-e`` with the largest magnitude (over ``dim``, or all of ``x``) in [0.5, 1), and ``e``.

    Scaling by a power of two is exact, so ``ldexp(unit, e)`` gives ``x`` back bit for bit; all-zero
    slices stay zero (e = 0). ``e`` keeps ``dim`` (size 1) for broadcasting.
    """
    peak = x.abs().amax() if dim is None else x.abs().amax(dim, keepdim=True)
    exponent = torch.frexp(peak).exponent
    return torch.ldexp(x, -exponent), exponent


def centre(x: Tensor, dim: int = 0) -> Tensor:
    """``x`` minus its mean along ``dim``; a slice that is constant along ``dim`` becomes exactly 0.

    Its computed mean can be off by rounding, and ``unit_scale`` would blow that rounding up into
    a slice that seems to vary.
    """
    xc = x - x.mean(dim, keepdim=True)
    return xc.masked_fill((x == x.narrow(dim, 0, 1)).all(dim, keepdim=True), 0.0)


def smallest_p_value(n_arrangements: float, n_permutations: int, alternative: str) -> float:
    """The smallest p-value a permutation test can give: max(1 / (B + 1), 1 / #arrangements), doubled
    for two-sided tests. Below that, a drawn permutation repeats the observed arrangement."""
    floor = max(1 / (n_permutations + 1), 1 / n_arrangements)
    return min(1.0, 2 * floor if alternative == "two-sided" else floor)


def check_count(value: int, name: str, *, minimum: int = 1) -> None:
    """Refuse a resample/permutation count below ``minimum``."""
    if value < minimum:
        raise OptionError(f"{name} must be an int >= {minimum}, got {value}")


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    """Refuse an option outside its accepted values, listing them."""
    if value not in choices:
        raise OptionError(f"{name}={value!r} is not one of {choices}")

