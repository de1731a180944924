"""Input conversion shared by the statistics: numpy arrays or torch tensors -> float64 CPU tensors.

Every statistic computes in float64 (DESIGN.md, numerics) and refuses non-finite input with a
message naming the argument, the count of bad entries and the first one, so a NaN never turns
into a silent NaN p-value.
"""

from typing import TypeAlias

import numpy as np
import torch
from torch import Tensor

from tl_interp.errors import InputError, OptionError

__all__ = ["ArrayLike", "as_float64", "check_count", "check_choice"]

ArrayLike: TypeAlias = np.ndarray | Tensor


def as_float64(x: ArrayLike, name: str, *, min_ndim: int = 1) -> Tensor:
    """``x`` as a float64 CPU tensor; refuses NaN/Inf and arrays of too low rank."""
    t = torch.as_tensor(x) if isinstance(x, np.ndarray) else x.detach()
    t = t.to(device="cpu", dtype=torch.float64)
    if t.ndim < min_ndim:
        raise InputError(f"{name} has {t.ndim} axes, at least {min_ndim} are needed (shape {tuple(t.shape)})")
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise InputError(f"{name} has {int(bad.sum())} NaN/Inf entries (first at index {first}); "
                         "remove or impute them before computing statistics")
    return t


def check_count(value: int, name: str, *, minimum: int = 1) -> None:
    """Refuse a resample/permutation count below ``minimum``."""
    if value < minimum:
        raise OptionError(f"{name} must be an int >= {minimum}, got {value}")


def check_choice(value: str, name: str, choices: tuple[str, ...]) -> None:
    """Refuse an option outside its accepted values, listing them."""
    if value not in choices:
        raise OptionError(f"{name}={value!r} is not one of {choices}")
