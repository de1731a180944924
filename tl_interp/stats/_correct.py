"""Multiple-comparison corrections of p-values: Bonferroni, Holm (1979), Benjamini-Hochberg (1995).

All entries of ``p_values`` form one family (m = its number of entries), whatever its shape;
correct each family separately by calling once per family.

- bonferroni: min(1, m p).
- holm: step-down; sorted p_(1) <= ... <= p_(m), adjusted p_(i) = max_{j <= i} (m - j + 1) p_(j).
- fdr_bh: step-up; adjusted p_(i) = min_{j >= i} m p_(j) / j (statsmodels' and scipy's
  ``false_discovery_control(method="bh")`` definition).

Permutation p-values can't go below 1 / (B + 1) with B permutations, so a Bonferroni or Holm
correction over m of them can't go below m / (B + 1): past ``alpha`` the family can never show
an effect, however strong. Pass ``n_permutations=B`` and ``correct`` warns when that happens,
with the B that would be needed.
"""

import math
import warnings

import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, TlInterpWarning
from tl_interp.stats._inputs import ArrayLike, as_float64, check_choice

__all__ = ["correct"]

_METHODS = ("bonferroni", "holm", "fdr_bh")


@checked
def correct(p_values: ArrayLike | list[float], method: str = "bonferroni", *, n_permutations: int | None = None,
            alpha: float = 0.05) -> Tensor:
    """Adjusted p-values, same shape as ``p_values``, clipped to [0, 1].

    Args:
        p_values: p-values of one family of tests (any shape).
        method: ``"bonferroni"``, ``"holm"`` or ``"fdr_bh"``.
        n_permutations: when the p-values come from permutation tests with this many
            permutations: warn if no test of the family could pass ``alpha`` after the
            correction (Bonferroni and Holm: m / (B + 1) > alpha; module docstring).
        alpha: the level that check uses.

    Returns:
        float64 tensor of adjusted p-values (reject where adjusted <= alpha).

    Example:
        >>> correct([0.01, 0.04, 0.03], "holm").tolist()
        [0.03, 0.06, 0.06]
    """
    check_choice(method, "method", _METHODS)
    if isinstance(p_values, list):
        p_values = torch.tensor(p_values, dtype=torch.float64)
    p = as_float64(p_values, "p_values", min_ndim=0)
    if bool(((p < 0) | (p > 1)).any()):
        raise InputError(f"p_values must lie in [0, 1], got min {float(p.min())} and max {float(p.max())}")
    flat = p.reshape(-1)
    m = flat.numel()
    if n_permutations is not None:
        _check_resolution(m, method, n_permutations, alpha)
    if m == 0 or method == "bonferroni":
        return (p * m).clamp(0.0, 1.0)
    order = flat.argsort(stable=True)
    ranked = flat[order]
    i = torch.arange(1, m + 1, dtype=torch.float64)
    if method == "holm":
        adjusted = torch.cummax((m - i + 1) * ranked, dim=0).values
    else:
        adjusted = torch.cummin((m / i * ranked).flip(0), dim=0).values.flip(0)
    out = torch.empty_like(flat)
    out[order] = adjusted.clamp(0.0, 1.0)
    return out.reshape(p.shape)


def _check_resolution(m: int, method: str, n_permutations: int, alpha: float) -> None:
    """Warn when permutation p-values are too coarse for the correction ever to reach ``alpha``."""
    if n_permutations < 1 or not 0 < alpha < 1:
        raise InputError(f"n_permutations must be >= 1 and alpha in (0, 1), got {n_permutations} and {alpha}")
    floor = m / (n_permutations + 1)
    if method in ("bonferroni", "holm") and floor > alpha:
        needed = math.ceil(m / alpha) - 1  # the smallest B with m / (B + 1) <= alpha
        warnings.warn(f"{method} over {m} permutation p-values with {n_permutations} permutations can't go below "
                      f"{m} / {n_permutations + 1} = {floor:.3g} > alpha {alpha}: no test can pass, whatever the "
                      f"data. Use at least {needed} permutations, or fewer tests in the family",
                      TlInterpWarning, stacklevel=3)
