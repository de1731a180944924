"""Input checks shared by the similarity metrics: paired row matrices in float64, no NaN/Inf.

Every metric here is invariant to scaling either side by a constant, so each side is first
scaled by a power of two to a largest magnitude in [0.5, 1) (``stats._inputs.unit_scale``:
exact), and once more after centring: any finite scale gives the same value, where squaring
raw entries would overflow at 1e200 and underflow to "no variation" at 1e-200. Only a
representation whose rows are exactly equal is refused.
"""

from torch import Tensor

from tl_interp.errors import InputError, ShapeError
from tl_interp.stats._inputs import ArrayLike, as_float64, centre, unit_scale

__all__ = ["ArrayLike", "paired_rows", "centred", "first_copies"]


def paired_rows(X: ArrayLike, Y: ArrayLike, what: str, *, min_rows: int = 2,
                rescale: bool = True) -> tuple[Tensor, Tensor]:
    """``X (n, d1)`` and ``Y (n, d2)`` as float64 CPU tensors, rows paired, finite, each side scaled
    by a power of two to a largest magnitude in [0.5, 1) unless ``rescale=False``."""
    x, y = as_float64(X, f"{what}: X"), as_float64(Y, f"{what}: Y")
    for name, t in (("X", x), ("Y", y)):
        if t.ndim != 2:
            raise ShapeError(f"{what}: {name} must be (n, features), got shape {tuple(t.shape)}; "
                             "flatten the other axes into rows or features first")
    if x.shape[0] != y.shape[0]:
        raise ShapeError(f"{what}: X has {x.shape[0]} rows and Y has {y.shape[0]}; rows must be the same "
                         "items (words, prompts) in both, in the same order")
    if x.shape[0] < min_rows:
        raise InputError(f"{what} needs at least {min_rows} rows (paired items), got {x.shape[0]}")
    return (unit_scale(x)[0], unit_scale(y)[0]) if rescale else (x, y)


def centred(x: Tensor, name: str, what: str) -> Tensor:
    """Columns minus their means, scaled by a power of two to a largest magnitude in [0.5, 1);
    refuses an input that is constant (nothing to compare)."""
    x = unit_scale(x)[0]
    xc = centre(x)
    if not bool(xc.abs().max() > 0):
        raise InputError(f"{what}: every row of {name} is the same (it has zero variance); there is "
                         "nothing to compare")
    return unit_scale(xc)[0]


def first_copies(source: Tensor) -> Tensor:
    """For each row of a bootstrap resample (``source``: the rows it copies), the first row copying the
    same item: reading pair values through it makes copies tie exactly, whatever the rounding."""
    return (source[:, None] == source[None, :]).int().argmax(1)
