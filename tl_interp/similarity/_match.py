"""Pair the units (neurons, SAE features) of two models by the correlation of their activations.

Pearson correlation of every unit of A with every unit of B over the same n inputs
(Li, Yosinski, Clune, Lipson & Hopcroft 2016, "Convergent learning"), then either a one-to-one
matching that maximises the total correlation (``"hungarian"``: scipy's
linear_sum_assignment) or each unit of A's best partner in B (``"argmax"``, many-to-one).
Dead or constant units have no correlation; they are excluded and listed, never NaN.
"""

from dataclasses import dataclass

import scipy.optimize
import torch
from torch import Tensor

from tl_interp._checks import checked, renamed
from tl_interp.errors import InputError
from tl_interp.similarity._inputs import ArrayLike, paired_rows
from tl_interp.stats._inputs import centre, check_choice, unit_scale

__all__ = ["UnitMatch", "match_units", "unit_correlations"]


@dataclass(frozen=True)
class UnitMatch:
    """Matched units: ``pairs[k] = (i, j)`` (i in A, j in B) with correlation ``correlations[k]``.

    ``constant_a`` / ``constant_b`` list the units left out because they never vary.
    """

    pairs: Tensor
    correlations: Tensor
    constant_a: Tensor
    constant_b: Tensor
    method: str

    def __repr__(self) -> str:
        mean = float(self.correlations.mean()) if self.correlations.numel() else float("nan")
        return (f"UnitMatch({self.method}: {self.pairs.shape[0]} pairs, mean r {mean:.3f}; "
                f"{self.constant_a.numel()} constant units in A, {self.constant_b.numel()} in B left out)")


def unit_correlations(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Correlations (live units of A x live units of B) and the indices of the live units."""
    live = []
    standard = []
    for t in (a, b):
        # constant units centre to exactly 0 (not to rounding noise that would pose as a live unit), and
        # each unit is scaled by its own power of two (exact) so a unit at 1e-200 or 1e200 keeps its correlations
        tc = unit_scale(centre(t), dim=0)[0]
        sd = tc.norm(dim=0)
        keep = (sd > 0).nonzero().flatten()
        live.append(keep)
        standard.append(tc[:, keep] / sd[keep])
    return standard[0].T @ standard[1], live[0], live[1]


def _constant(n_units: int, live: Tensor) -> Tensor:
    mask = torch.ones(n_units, dtype=torch.bool)
    mask[live] = False
    return mask.nonzero().flatten()


@renamed(A="X", B="Y")
@checked
def match_units(X: ArrayLike, Y: ArrayLike, *, method: str = "hungarian") -> UnitMatch:
    """Pair units of X ``(n, u1)`` with units of Y ``(n, u2)`` by activation correlation.

    Args:
        X, Y: activations over the same n inputs (rows paired), units on the last axis.
        method: ``"hungarian"`` (one-to-one, maximal total correlation) or ``"argmax"``
            (every live unit of X gets its most correlated unit of Y).

    Returns:
        ``UnitMatch`` with ``.pairs`` (k, 2), ``.correlations`` (k,), and the excluded constant units.

    Example:
        >>> import torch
        >>> X = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
        >>> match_units(X, X[:, [2, 0, 3, 1]]).pairs.tolist()
        [[0, 1], [1, 3], [2, 0], [3, 2]]
    """
    check_choice(method, "method", ("hungarian", "argmax"))
    a, b = paired_rows(X, Y, "match_units", min_rows=3)
    corr, live_a, live_b = unit_correlations(a, b)
    if not live_a.numel() or not live_b.numel():
        raise InputError(f"match_units: every unit of {'X' if not live_a.numel() else 'Y'} is constant over the "
                         f"{a.shape[0]} inputs; nothing can be matched")
    if method == "hungarian":
        rows, cols = scipy.optimize.linear_sum_assignment(corr.numpy(), maximize=True)
        rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
    else:
        rows, cols = torch.arange(corr.shape[0]), corr.argmax(1)
    pairs = torch.stack([live_a[rows], live_b[cols]], dim=1)
    return UnitMatch(pairs=pairs, correlations=corr[rows, cols], constant_a=_constant(a.shape[1], live_a),
                     constant_b=_constant(b.shape[1], live_b), method=method)
