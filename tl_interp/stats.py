"""Statistics for studies: bootstrap intervals over prompts (more to come: permutation tests,
paired tests, multiple-comparison corrections).

Bootstrap percentile intervals (Efron & Tibshirani 1993, ch. 13): resample prompts with
replacement, recompute the mean, and take the alpha/2 and 1-alpha/2 quantiles. Computed in
float64, vectorised over every leading axis, seeded.
"""

import torch
from beartype import beartype
from jaxtyping import Float, jaxtyped
from torch import Tensor

from tl_interp.errors import ShapeError

__all__ = ["bootstrap_mean_ci"]


@jaxtyped(typechecker=beartype)
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
    n = values.shape[-1]
    if n < 2:
        raise ShapeError(f"a bootstrap interval needs at least 2 prompts, got {n}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(n, (n_boot, n), generator=generator)
    x = values.detach().double().cpu()
    means = _boot_means(x, index)
    q = torch.tensor([alpha / 2, 1 - alpha / 2], dtype=torch.float64)
    bounds = torch.quantile(means, q, dim=-1)
    return bounds[0], bounds[1]


def _boot_means(x: Tensor, index: Tensor) -> Tensor:
    """(*units, n_boot) bootstrap means, in blocks to bound memory."""
    parts = [x[..., block].mean(-1) for block in index.split(256)]  # each (*units, block, ) after mean
    return torch.cat(parts, dim=-1)
