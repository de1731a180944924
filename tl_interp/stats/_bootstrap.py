"""Bootstrap percentile intervals (Efron & Tibshirani 1993, ch. 13).

Resample rows with replacement, recompute the statistic, take the alpha/2 and 1-alpha/2
quantiles. Computed in float64 and seeded; every sample handed to one statistic is resampled
with the same row indices (a paired bootstrap), so intervals of paired quantities agree.
NaN/Inf inputs, and a statistic that returns NaN/Inf on some resample, are refused
(``InputError`` naming the statistic and the resample): a quantile of NaNs is NaN.
"""

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp._checks import checked
from tl_interp.errors import InputError, OptionError, ShapeError
from tl_interp.stats._inputs import ArrayLike, as_float64, check_count, check_finite, statistic_name

__all__ = ["bootstrap_mean_ci", "bootstrap_ci", "bootstrap_indices", "percentile_interval"]


@checked
def bootstrap_indices(n: int, n_boot: int, *, seed: int) -> Tensor:
    """``(n_boot, n)`` row indices drawn with replacement, the same for the same ``(n, n_boot, seed)``.

    Example:
        >>> bootstrap_indices(5, 3, seed=0).shape
        torch.Size([3, 5])
    """
    check_count(n_boot, "n_boot")
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(n, (n_boot, n), generator=generator)


@checked
def percentile_interval(values: Tensor, alpha: float, dim: int = -1) -> tuple[Tensor, Tensor]:
    """The alpha/2 and 1-alpha/2 quantiles of ``values`` along ``dim`` (linear interpolation).

    Example:
        >>> import torch
        >>> [float(b) for b in percentile_interval(torch.arange(101.0), 0.1)]
        [5.0, 95.0]
    """
    if not 0 < alpha < 1:
        raise OptionError(f"alpha must be in (0, 1), got {alpha}")
    if not -max(values.ndim, 1) <= dim < max(values.ndim, 1):
        raise OptionError(f"percentile_interval: dim={dim} but values have {values.ndim} axes (shape "
                          f"{tuple(values.shape)}); pass the axis that holds the resamples")
    check_finite(values, "percentile_interval: values", "an interval of NaN/Inf values means nothing; drop them")
    q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)
    bounds = torch.quantile(values.double(), q, dim=dim)
    return bounds[0], bounds[1]


@checked
def bootstrap_mean_ci(values: Float[Tensor, "*units n"], *, n_boot: int = 2000, alpha: float = 0.05,
                      seed: int = 0) -> tuple[Float[Tensor, "*units"], Float[Tensor, "*units"]]:
    """Percentile bootstrap interval of the mean over the last axis (e.g. prompts).

    The same resampled prompt sets are used for every unit, so intervals of different units
    are comparable (a paired bootstrap).

    Args:
        values: per-prompt values, prompts on the last axis.
        n_boot: number of bootstrap resamples.
        alpha: 1 - coverage (0.05 for 95% intervals).
        seed: seed of the resampling.

    Returns:
        (low, high) bounds, float64, shaped like ``values`` without its last axis.

    Example:
        >>> import torch
        >>> low, high = bootstrap_mean_ci(torch.arange(10.0), seed=0)
        >>> bool(low < 4.5 < high)
        True
    """
    x = as_float64(values, "bootstrap_mean_ci: values")
    n = x.shape[-1]
    if n < 2:
        raise ShapeError(f"a bootstrap interval needs at least 2 prompts, got {n}")
    if not 0 < alpha < 1:
        raise OptionError(f"alpha must be in (0, 1), got {alpha}")
    index = bootstrap_indices(n, n_boot, seed=seed)
    parts = [x[..., block].mean(-1) for block in index.split(256)]  # each (*units, block)
    return percentile_interval(torch.cat(parts, dim=-1), alpha)


@checked
def bootstrap_ci(statistic: Callable[..., Any], *samples: ArrayLike, n_boot: int = 2000, alpha: float = 0.05,
                 seed: int = 0, vectorized: bool = False, progress: bool = False) -> tuple[Tensor, Tensor]:
    """Percentile bootstrap interval of ``statistic(*samples)``, resampling rows (axis 0).

    Every sample is resampled with the same row indices (paired). The indices are
    ``bootstrap_indices(n, n_boot, seed=seed)``, so the same seed gives the same resamples
    everywhere in the toolkit.

    Args:
        statistic: ``f(*samples) -> scalar or tensor``; with ``vectorized=True`` it gets
            samples with a leading resample axis ``(b, n, ...)`` and returns ``(b, ...)``.
        *samples: arrays or tensors with the same number of rows.
        n_boot: number of resamples.
        alpha: 1 - coverage.
        seed: seed of the resampling.
        vectorized: whether ``statistic`` takes a leading resample axis.
        progress: show a progress bar (unvectorised statistics only).

    Returns:
        (low, high): float64 tensors shaped like the statistic's value.

    Example:
        >>> import torch
        >>> x = torch.arange(20.0)
        >>> low, high = bootstrap_ci(lambda a: a.median(), x, seed=0)
        >>> bool(low < 9.5 < high)
        True
    """
    if not samples:
        raise InputError("bootstrap_ci needs at least one sample")
    data = [as_float64(s, f"sample {i}") for i, s in enumerate(samples)]
    n = data[0].shape[0]
    if any(d.shape[0] != n for d in data):
        raise ShapeError(f"bootstrap_ci resamples rows together; the samples have {[d.shape[0] for d in data]} rows")
    if n < 2:
        raise ShapeError(f"a bootstrap interval needs at least 2 rows, got {n}")
    index = bootstrap_indices(n, n_boot, seed=seed)
    name = statistic_name(statistic)
    if vectorized:
        stats = [_vectorized_value(statistic(*[d[block] for d in data]), block.shape[0], name)
                 for block in index.split(256)]
        values = torch.cat(stats, dim=0)
    else:
        values = torch.stack([torch.as_tensor(statistic(*[d[row] for d in data]), dtype=torch.float64)
                              for row in tqdm(index, desc="bootstrap", disable=not progress)])
    check_finite(values, f"bootstrap_ci: the statistic {name} on the {n_boot} resamples (axis 0)",
                 "an interval of non-finite values means nothing; make the statistic finite on every resample "
                 "(e.g. guard its divisions by zero: a resample can repeat one row n times)")
    return percentile_interval(values, alpha, dim=0)


def _vectorized_value(value: Any, rows: int, name: str) -> Tensor:
    """A vectorised statistic's value for a block of ``rows`` resamples: it must lead with that axis."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.ndim == 0 or t.shape[0] != rows:
        raise ShapeError(f"bootstrap_ci(vectorized=True): the statistic {name} got a block of {rows} resamples "
                         f"(samples shaped (resamples, n, ...)) and returned shape {tuple(t.shape)}; it must return "
                         f"one value per resample, shape ({rows}, ...): reduce over axis 1, not over all axes "
                         "(e.g. a.mean(1), not a.mean()), or pass vectorized=False")
    return t
