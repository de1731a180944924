"""Bootstrap percentile intervals (Efron & Tibshirani 1993, ch. 13).

Resample rows with replacement, recompute the statistic, take the alpha/2 and 1-alpha/2
quantiles. Computed in float64 and seeded; every sample handed to one statistic is resampled
with the same row indices (a paired bootstrap), so intervals of paired quantities agree.
NaN/Inf inputs, and a statistic that returns NaN/Inf on some resample, are refused
(``InputError`` naming the statistic and the resample): a quantile of NaNs is NaN.

Fast path: a statistic of two paired samples registered with ``register_bootstrap`` (the
``ti.similarity`` metrics) evaluates blocks of resamples from what resampling does not change
(Gram matrices, distance orders, covariances), given each resample as row counts. Its values equal
the loop's on the same resamples (tested per metric); a resample the batched form flags as
ill-conditioned is recomputed by the loop. Block sizes come from a memory budget (``memory_mb``).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp._checks import checked
from tl_interp.errors import InputError, OptionError, ShapeError
from tl_interp.stats._inputs import ArrayLike, as_float64, check_count, check_finite, statistic_name, unwrap_partial

__all__ = ["bootstrap_mean_ci", "bootstrap_ci", "bootstrap_indices", "percentile_interval", "PreparedBootstrap",
           "register_bootstrap", "resample_counts", "bootstrap_evaluator"]

_NONFINITE_FIX = ("an interval of non-finite values means nothing; make the statistic finite on every resample "
                  "(e.g. guard its divisions by zero: a resample can repeat one row n times)")


@dataclass(frozen=True)
class PreparedBootstrap:
    """A statistic's batched bootstrap over paired rows.

    ``evaluate(counts (b, n), memory_mb) -> (values (b,), unsure (b,) bool)``: ``counts[r, i]`` is how
    often resample r drew row i; ``unsure`` marks resamples whose batched value is not certified
    exact (near-degenerate), which the loop recomputes. ``bytes_per_resample`` sizes the blocks:
    as many as ``memory_mb`` holds after the ``held_bytes`` the prepared form keeps (sorted orders,
    indices), or as ``block_bytes`` (e.g. a cache-sized block for gathers, which slow down with
    large temporaries) if that is smaller.
    """

    evaluate: Callable[[Tensor, float], tuple[Tensor, Tensor]]
    bytes_per_resample: int
    block_bytes: float | None = None
    held_bytes: int = 0


_BOOTSTRAPS: dict[Callable[..., Any], Callable[..., PreparedBootstrap | None]] = {}


@checked
def register_bootstrap(statistic: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``prepare(x, y, **statistic_kwargs) -> PreparedBootstrap | None`` becomes ``statistic``'s
    batched bootstrap (``None``: no batched form for these options, the loop runs). Its values must
    equal ``statistic(x[rows], y[rows])`` (or the caller's loop form) on every resample.

    Example:
        >>> import torch
        >>> def mean_product(x, y): return float((x * y).mean())
        >>> @register_bootstrap(mean_product)
        ... def _mean_product_bootstrap(x, y):
        ...     xy = x * y
        ...     def _evaluate(counts, memory_mb):
        ...         return counts @ xy / xy.numel(), torch.zeros(counts.shape[0], dtype=torch.bool)
        ...     return PreparedBootstrap(_evaluate, bytes_per_resample=8 * x.shape[0])
        >>> x = torch.arange(6.0, dtype=torch.float64)
        >>> index = bootstrap_indices(6, 4, seed=0)
        >>> evaluate, _ = bootstrap_evaluator(mean_product, x, x)
        >>> loop = torch.tensor([mean_product(x[r], x[r]) for r in index], dtype=torch.float64)
        >>> torch.allclose(evaluate(index, 0), loop, rtol=1e-12)
        True
    """
    def _register(prepare: Callable[..., PreparedBootstrap | None]) -> Callable[..., PreparedBootstrap | None]:
        _BOOTSTRAPS[statistic] = prepare
        return prepare
    return _register


def resample_counts(index: Tensor, n: int) -> Tensor:
    """``(b, n)`` float64 counts of each row in each resample of ``index (b, n_draws)``."""
    counts = torch.zeros(index.shape[0], n, dtype=torch.float64)
    return counts.scatter_add_(1, index, torch.ones(index.shape, dtype=torch.float64))


def bootstrap_evaluator(statistic: Callable[..., Any], x: Tensor, y: Tensor, *,
                        one: Callable[[int, Tensor], float] | None = None, memory_mb: float = 1024.0
                        ) -> tuple[Callable[[Tensor, int], Tensor], int]:
    """``(evaluate(index_block, start) -> values, block size)`` for resamples of paired rows of x and y.

    The batched form registered for ``statistic`` runs if there is one, else ``one(b, rows)`` per
    resample (default ``statistic(x[rows], y[rows])``; b is the resample's number, for messages).
    Batched values are checked finite; resamples they flag go through ``one``.
    """
    name = statistic_name(statistic)
    if one is None:
        def one(b: int, rows: Tensor) -> float:
            return float(statistic(x[rows], y[rows]))

    def _loop(index: Tensor, start: int) -> Tensor:
        return torch.tensor([float(one(start + b, rows)) for b, rows in enumerate(index)], dtype=torch.float64)

    func, kwargs = unwrap_partial(statistic)
    prepare = _BOOTSTRAPS.get(func)
    prepared = None if prepare is None else prepare(x, y, **kwargs)
    if prepared is None:
        return _loop, 16
    budget = min(memory_mb * 2**20 - prepared.held_bytes, prepared.block_bytes or float("inf"))
    block = max(1, int(budget // max(1, prepared.bytes_per_resample)))

    def _batched(index: Tensor, start: int) -> Tensor:
        values, unsure = prepared.evaluate(resample_counts(index, x.shape[0]), memory_mb)
        check_finite(values[~unsure], f"bootstrap: the batched {name} on resamples {start}..{start + len(index) - 1}",
                     _NONFINITE_FIX)
        for b in unsure.nonzero().flatten().tolist():
            values[b] = one(start + b, index[b])
        return values

    return _batched, block


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
        raise InputError(f"a bootstrap interval needs at least 2 prompts, got {n}")
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
        raise InputError(f"a bootstrap interval needs at least 2 rows, got {n}")
    index = bootstrap_indices(n, n_boot, seed=seed)
    name = statistic_name(statistic)
    if vectorized:
        stats = [_vectorized_value(statistic(*[d[block] for d in data]), block.shape[0], name)
                 for block in index.split(256)]
        values = torch.cat(stats, dim=0)
    elif len(data) == 2 and unwrap_partial(statistic)[0] in _BOOTSTRAPS:
        evaluate, block = bootstrap_evaluator(statistic, data[0], data[1])
        values = torch.cat([evaluate(part, start) for start, part in zip(range(0, n_boot, block), index.split(block))])
    else:
        values = torch.stack([torch.as_tensor(statistic(*[d[row] for d in data]), dtype=torch.float64)
                              for row in tqdm(index, desc="bootstrap", disable=not progress)])
    check_finite(values, f"bootstrap_ci: the statistic {name} on the {n_boot} resamples (axis 0)", _NONFINITE_FIX)
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
