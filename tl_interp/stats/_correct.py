"""Multiple-comparison corrections of p-values: Bonferroni, Holm (1979), Benjamini-Hochberg (1995).

All entries of ``p_values`` form one family (m = its number of entries), whatever its shape;
correct each family separately by calling once per family.

- bonferroni: min(1, m p).
- holm: step-down; sorted p_(1) <= ... <= p_(m), adjusted p_(i) = max_{j <= i} (m - j + 1) p_(j).
- fdr_bh: step-up; adjusted p_(i) = min_{j >= i} m p_(j) / j (statsmodels' and scipy's
  ``false_discovery_control(method="bh")`` definition).
"""

import torch
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError
from tl_interp.stats._inputs import ArrayLike, as_float64, check_choice

__all__ = ["correct"]

_METHODS = ("bonferroni", "holm", "fdr_bh")


@checked
def correct(p_values: ArrayLike | list[float], method: str = "bonferroni") -> Tensor:
    """Adjusted p-values, same shape as ``p_values``, clipped to [0, 1].

    Args:
        p_values: p-values of one family of tests (any shape).
        method: ``"bonferroni"``, ``"holm"`` or ``"fdr_bh"``.

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
