"""Permutation tests with a p-value that is never 0, and vectorised nulls for known statistics.

p = (1 + #{null >= observed}) / (B + 1) for ``alternative="greater"`` (Phipson & Smyth 2010:
the observed arrangement counts as one of the permutations), mirrored for ``"less"``, and
2 min(p_less, p_greater) clipped to 1 for ``"two-sided"`` (scipy.stats.permutation_test's
rule). Ties are counted within a relative 100 float64 eps of the observed value, as scipy does,
so a null value that equals the observed one up to rounding counts as a tie. A NaN or inf
observed or null value is refused (``InputError`` naming the statistic): NaN compares as
neither larger nor smaller, so it would otherwise get the smallest p-value.

Kinds of permutation (the same as scipy's ``permutation_type``):

- ``"pairings"``: rows of ``y`` are reordered against ``x`` (is X related to Y row by row?);
- ``"labels"``: ``x`` and ``y`` are pooled and re-split at random (do two groups differ?);
- ``"signs"``: within each pair (x_i, y_i) the two are swapped at random (paired difference);
  with ``y=None`` the sign of each row of ``x`` is flipped.

Fast path: a statistic registered with ``register_null`` (the ``ti.similarity`` metrics, also
when wrapped in ``functools.partial``) evaluates the pairings null in batched tensor operations
instead of calling the statistic once per permutation. Its values equal the loop's (tested
per metric). Any other statistic runs in a loop.
"""

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from tl_interp._checks import checked
from tl_interp.errors import InputError, ShapeError
from tl_interp.stats._inputs import (
    ArrayLike,
    as_float64,
    check_choice,
    check_count,
    check_finite,
    statistic_name,
    unwrap_partial,
)

__all__ = ["PermutationTest", "PreparedNull", "permutation_test", "permutation_indices", "register_null",
           "permutation_p_value", "null_evaluator"]

_KINDS = ("pairings", "labels", "signs")
_ALTERNATIVES = ("greater", "less", "two-sided")
_BLOCK = 1024  # permutations drawn per generator call: fixes the stream, whatever the consumer
# NaN is neither >= nor <= anything, so a NaN statistic would count as beaten by no permutation
# and get the smallest p-value; an inf one ties only with inf. Neither has a meaningful p-value.
_NONFINITE_FIX = ("a p-value of a non-finite statistic means nothing (a NaN would count as beaten by no permutation); "
                  "make the statistic return a finite number, e.g. guard its divisions by zero, or drop the "
                  "degenerate rows")


@dataclass(frozen=True)
class PermutationTest:
    """The observed statistic, its p-value and the permutation null it was compared with."""

    statistic: Tensor
    p_value: Tensor
    null: Tensor
    n_permutations: int
    kind: str
    alternative: str
    seed: int | None
    vectorized: bool = False


@dataclass(frozen=True)
class PreparedNull:
    """A statistic's batched pairings null: ``evaluate(perms (b, n)) -> (b,)``, ``chunk`` perms a call."""

    evaluate: Callable[[Tensor], Tensor]
    chunk: int


_NULLS: dict[Callable[..., Any], Callable[..., PreparedNull | None]] = {}


@checked
def register_null(metric: Callable[..., Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator: ``prepare(x, y, **metric_kwargs) -> PreparedNull | None`` becomes ``metric``'s fast null
    (``None``: no batched form for these options, the loop runs). Its values must equal the loop's.

    Example:
        >>> import torch
        >>> def dot(x, y): return float(x @ y)
        >>> @register_null(dot)
        ... def _dot_null(x, y):
        ...     return PreparedNull(lambda perms: y[perms] @ x, chunk=256)
        >>> permutation_test(dot, torch.arange(5.0), torch.arange(5.0), n_permutations=99).vectorized
        True
    """
    def _register(prepare: Callable[..., PreparedNull | None]) -> Callable[..., PreparedNull | None]:
        _NULLS[metric] = prepare
        return prepare
    return _register


def null_evaluator(statistic: Callable[..., Any], kind: str, x: Tensor, y: Tensor | None
                   ) -> tuple[Callable[[Tensor], Tensor], int, bool]:
    """``(evaluate(perms block) -> null values, block size, vectorized)``: the statistic's registered
    batched pairings null if it has one for these options, else a loop over the permutations."""
    func, kwargs = unwrap_partial(statistic)
    prepare = _NULLS.get(func) if kind == "pairings" else None
    prepared = None if prepare is None else prepare(x, y, **kwargs)
    if prepared is not None:
        return prepared.evaluate, prepared.chunk, True

    def _loop(block: Tensor) -> Tensor:
        return torch.stack([_as_scalar(statistic(*_arrange(kind, x, y, perm))) for perm in block])

    return _loop, 16, False


@checked
def permutation_indices(n: int, n_permutations: int, *, seed: int, kind: str = "pairings") -> Tensor:
    """The permutations ``permutation_test`` uses: ``(n_permutations, n)`` row orders, or flips for signs.

    For ``"labels"`` pass n = n_x + n_y. Deterministic in ``(n, n_permutations, seed, kind)``.

    Example:
        >>> p = permutation_indices(4, 3, seed=0)
        >>> p.shape, sorted(p[0].tolist())
        (torch.Size([3, 4]), [0, 1, 2, 3])
    """
    check_choice(kind, "kind", _KINDS)
    check_count(n_permutations, "n_permutations")
    generator = torch.Generator().manual_seed(seed)
    blocks = []
    for start in range(0, n_permutations, _BLOCK):
        u = torch.rand(min(_BLOCK, n_permutations - start), n, generator=generator, dtype=torch.float64)
        blocks.append(u < 0.5 if kind == "signs" else u.argsort(dim=1))
    return torch.cat(blocks)


@checked
def permutation_p_value(null: Tensor, observed: Tensor, alternative: str) -> Tensor:
    """(1 + #{null at least as extreme}) / (B + 1), with scipy's relative tie tolerance.

    Example:
        >>> import torch
        >>> float(permutation_p_value(torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64),
        ...                           torch.tensor(0.5, dtype=torch.float64), "greater"))
        0.75
    """
    check_choice(alternative, "alternative", _ALTERNATIVES)
    check_finite(observed, "permutation_p_value: the observed statistic", _NONFINITE_FIX)
    check_finite(null, "permutation_p_value: the null", _NONFINITE_FIX)
    gamma = observed.abs() * torch.finfo(torch.float64).eps * 100
    b = null.shape[0]
    greater = (1 + (null >= observed - gamma).sum(0).double()) / (b + 1)
    less = (1 + (null <= observed + gamma).sum(0).double()) / (b + 1)
    p = {"greater": greater, "less": less, "two-sided": 2 * torch.minimum(greater, less)}[alternative]
    return p.clamp(max=1.0)


def _as_scalar(value: Any) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.numel() != 1:
        raise InputError(f"the statistic must return one number, it returned shape {tuple(t.shape)}")
    return t.reshape(())


def _arrange(kind: str, x: Tensor, y: Tensor | None, perm: Tensor) -> tuple[Tensor, ...]:
    if kind == "pairings":
        return x, y[perm]
    if kind == "labels":
        pooled = torch.cat([x, y])[perm]
        return pooled[:x.shape[0]], pooled[x.shape[0]:]
    flip = perm.reshape(-1, *([1] * (x.ndim - 1)))
    if y is None:
        return (torch.where(flip, -x, x),)
    return torch.where(flip, y, x), torch.where(flip, x, y)


def _check(kind: str, x: Tensor, y: Tensor | None, permutations: Tensor | None) -> int:
    if y is None and kind != "signs":
        raise InputError(f"kind={kind!r} needs a second sample y (only kind='signs' works on one sample)")
    if kind in ("pairings", "signs") and y is not None and y.shape[0] != x.shape[0]:
        raise ShapeError(f"kind={kind!r} pairs rows of x and y: x has {x.shape[0]} rows, y has {y.shape[0]}")
    n = x.shape[0] + (y.shape[0] if kind == "labels" else 0)
    if n < 2:
        raise InputError(f"a permutation test needs at least 2 rows, got {n}")
    if permutations is not None:
        _check_permutations(kind, n, permutations)
    return n


def n_arrangements(kind: str, n: int, n_x: int) -> float:
    """How many distinct arrangements a permutation test of this kind can draw (inf past ~1e300)."""
    try:
        if kind == "pairings":
            return float(math.factorial(n)) if n <= 170 else math.inf
        if kind == "labels":
            return float(math.comb(n, n_x))
        return 2.0 ** n
    except OverflowError:
        return math.inf


def _check_permutations(kind: str, n: int, permutations: Any) -> None:
    """Explicit permutations must be what ``permutation_indices`` draws: row orders, or bool flips for signs."""
    fix = f"build them with permutation_indices({n}, n_permutations, seed=..., kind={kind!r})"
    if not isinstance(permutations, Tensor):
        raise InputError(f"permutations must be a tensor, got {type(permutations).__name__}; {fix}")
    if permutations.ndim != 2 or permutations.shape[1] != n:
        raise ShapeError(f"permutations must have shape (n_permutations, {n}), got {tuple(permutations.shape)}")
    if kind == "signs":
        if permutations.dtype != torch.bool:
            raise InputError(f"kind='signs' takes permutations as bool flips (True: swap the pair / flip the sign), "
                             f"got dtype {permutations.dtype}; {fix}")
        return
    if permutations.dtype.is_floating_point or permutations.dtype.is_complex or permutations.dtype == torch.bool:
        raise InputError(f"kind={kind!r} takes permutations as integer row orders (each row a reordering of "
                         f"0..{n - 1}), got dtype {permutations.dtype}; {fix}")
    p = permutations.detach().cpu().long()
    outside = ((p < 0) | (p >= n)).any(1).nonzero().flatten()
    if outside.numel():
        row = int(outside[0])
        raise InputError(f"permutations row {row} has indices outside 0..{n - 1} (min {int(p[row].min())}, max "
                         f"{int(p[row].max())}; {outside.numel()} such rows); {fix}")
    repeated = (p.sort(1).values != torch.arange(n)).any(1).nonzero().flatten()
    if repeated.numel():
        row = int(repeated[0])
        raise InputError(f"permutations row {row} is not a permutation of 0..{n - 1}: it repeats rows and leaves "
                         f"others out ({repeated.numel()} such rows); a permutation null reorders every row exactly "
                         f"once (resampling with replacement is a bootstrap); {fix}")


@checked
def permutation_test(statistic: Callable[..., Any], x: ArrayLike, y: ArrayLike | None = None, *,
                     n_permutations: int = 10_000, kind: str = "pairings", alternative: str = "greater",
                     seed: int = 0, permutations: Tensor | None = None, progress: bool = False) -> PermutationTest:
    """Test ``statistic(x, y)`` against its distribution over random permutations.

    Args:
        statistic: ``f(x, y) -> number`` (``f(x)`` for one-sample sign flips), on float64 tensors.
        x, y: samples; rows on axis 0.
        n_permutations: number of random permutations B.
        kind: ``"pairings"``, ``"labels"`` or ``"signs"`` (see the module docstring).
        alternative: ``"greater"``, ``"less"`` or ``"two-sided"``.
        seed: seed of the permutations (``permutation_indices(n, B, seed=seed, kind=kind)``).
        permutations: explicit ``(B, n)`` row orders (bool flips for signs) instead of drawing
            them, e.g. to share one set across several statistics; overrides ``n_permutations``.
            Each row must be a permutation of ``0..n-1`` (``InputError`` otherwise).
        progress: show a progress bar.

    Returns:
        ``PermutationTest``: statistic (0-d), p_value (0-d, never 0), null ``(B,)``, and the settings.

    Example:
        >>> import torch
        >>> x = torch.arange(12.0); y = 2 * x + torch.randn(12, generator=torch.Generator().manual_seed(0))
        >>> corr = lambda a, b: torch.corrcoef(torch.stack([a, b]))[0, 1]
        >>> res = permutation_test(corr, x, y, n_permutations=999, seed=0)
        >>> float(res.p_value)  # no permutation beats the observed correlation
        0.001
    """
    check_choice(kind, "kind", _KINDS)
    check_choice(alternative, "alternative", _ALTERNATIVES)
    xt = as_float64(x, "x")
    yt = None if y is None else as_float64(y, "y")
    n = _check(kind, xt, yt, permutations)
    if permutations is None:
        perms = permutation_indices(n, n_permutations, seed=seed, kind=kind)
    else:
        perms = permutations.detach().cpu() if kind == "signs" else permutations.detach().cpu().long()
    name = statistic_name(statistic)
    observed = _as_scalar(statistic(xt) if yt is None else statistic(xt, yt))
    check_finite(observed, f"permutation_test: the observed value of the statistic {name}", _NONFINITE_FIX)
    evaluate, chunk, vectorized = null_evaluator(statistic, kind, xt, yt)
    parts = []
    with tqdm(total=perms.shape[0], desc="permutations", disable=not progress, delay=2) as bar:
        for block in perms.split(chunk):
            parts.append(evaluate(block).double())
            bar.update(block.shape[0])
    null = torch.cat(parts)
    check_finite(null, f"permutation_test: the null of the statistic {name} (its value under each of the "
                       f"{perms.shape[0]} permutations)", _NONFINITE_FIX)
    return PermutationTest(statistic=observed, p_value=permutation_p_value(null, observed, alternative), null=null,
                           n_permutations=int(perms.shape[0]), kind=kind, alternative=alternative,
                           seed=None if permutations is not None else seed, vectorized=vectorized)
