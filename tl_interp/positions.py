"""Positions: the one way every tl_interp function says *which token positions*.

Accepted everywhere a ``positions=`` parameter appears (hooks, caches, readers, metrics,
studies):

- an ``int`` (negative counts from the end of the sequence), a ``slice``, a list of ints;
- a boolean mask over positions ``(pos,)`` or over ``(batch, pos)``;
- one index per row, an integer tensor ``(batch,)`` (e.g. ``Tokenized.last_index``);
- ``"last"``: each row's last real (non-pad) token; ``"all"``: every real token;
- ``From(k)``: every real token from the ``k``-th real token of the row on (``From(0)`` is
  ``"all"``; with a BOS token prepended, ``From(1)`` skips it);
- a token finder such as ``first(" her")`` (each row's first occurrence of a token, or a
  position relative to it), resolved against the batch by the functions that read inputs.

Integer positions are absolute positions in the sequence (also during key-value-cached
generation, where they keep meaning the same token). ``"last"``, ``"all"`` and ``From``
follow each row's padding, so they are right for left- and right-padded batches alike.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias

import torch
from torch import Tensor

from tl_interp.errors import InputError, SelectionError

__all__ = ["Positions", "From", "Finder", "first", "is_symbolic", "describe", "real_bounds"]


@dataclass(frozen=True)
class From:
    """Every real token from the row's ``index``-th real token on.

    Example:
        >>> From(2)
        From(2)
    """

    index: int

    def __post_init__(self) -> None:
        if isinstance(self.index, bool) or not isinstance(self.index, int) or self.index < 0:
            raise SelectionError(f"From(index) counts real tokens from the start of each row; "
                                 f"index must be an int >= 0, got {self.index!r}")

    def __repr__(self) -> str:
        return f"From({self.index})"


@dataclass(frozen=True)
class Finder:
    """Each row's position of a token (its ``occurrence``-th appearance), shifted by ``offset``.

    Build one with ``first(token)``; ``offset=-1`` is the token before it. Resolve it against
    a batch with ``.resolve(model, tokens)`` (functions that take ``positions=`` do this).
    """

    token: str | int
    offset: int = 0
    occurrence: int = 0

    def __repr__(self) -> str:
        shift = f" {self.offset:+d}" if self.offset else ""
        nth = f" #{self.occurrence}" if self.occurrence else ""
        return f"first({self.token!r}{nth}){shift}"

    def token_id(self, model: Any) -> int:
        """The token id this finder looks for (a string must be exactly one token)."""
        if isinstance(self.token, int):
            return self.token
        from tl_interp._tokens import single_token

        return single_token(model, self.token, repr(self), noun="token")

    def resolve(self, model: Any, tokens: Tensor, real: Tensor | None = None) -> Tensor:
        """``(batch,)`` positions of the token in each row; an error naming rows without it.

        Example:
            >>> import torch
            >>> first(7, offset=-1).resolve(None, torch.tensor([[1, 7, 7], [7, 2, 3]]))
            Traceback (most recent call last):
            ...
            tl_interp.errors.SelectionError: first(7) -1: the position before it is outside row 1 (at -1)
            >>> first(7).resolve(None, torch.tensor([[1, 7, 7], [7, 2, 3]])).tolist()
            [1, 0]
        """
        target = self.token_id(model)
        hits = tokens == target
        if real is not None:
            hits &= real.bool()
        counts = hits.sum(1)
        missing = (counts <= self.occurrence).nonzero().flatten().tolist()
        if missing:
            raise SelectionError(f"{self!r}: rows {missing} do not contain the token {self.token!r}"
                                 + (f" {self.occurrence + 1} times" if self.occurrence else "")
                                 + "; drop those prompts or choose another token")
        order = torch.cumsum(hits.long(), 1) - 1
        index = ((order == self.occurrence) & hits).float().argmax(1) + self.offset
        seq = tokens.shape[1]
        bad = ((index < 0) | (index >= seq)).nonzero().flatten().tolist()
        if bad:
            where = "before" if self.offset < 0 else "after"
            raise SelectionError(f"{self!r}: the position {where} it is outside row {bad[0]} "
                                 f"(at {int(index[bad[0]])})")
        if real is not None and not bool(real.bool()[torch.arange(len(index)), index].all()):
            rows = (~real.bool()[torch.arange(len(index)), index]).nonzero().flatten().tolist()
            raise SelectionError(f"{self!r}: the shifted position is padding in rows {rows}")
        return index


def first(token: str | int, *, offset: int = 0, occurrence: int = 0) -> Finder:
    """Positions of each row's first (or ``occurrence``-th) occurrence of ``token``, shifted.

    Args:
        token: a token string (exactly one token, e.g. ``" her"``) or a token id.
        offset: added to the found position (``-1``: the token before it).
        occurrence: which occurrence (0 = the first).

    Example:
        >>> first(" her", offset=-1)
        first(' her') -1
    """
    return Finder(token, offset, occurrence)


# Lists are typed Sequence[Any]: selections check every item themselves (a type checker samples one).
Positions: TypeAlias = int | slice | Sequence[Any] | Tensor | Literal["all", "last"] | From | Finder | None


def is_symbolic(positions: object) -> bool:
    """Whether ``positions`` depends on each row's padding (``"last"``, ``"all"``, ``From``)."""
    return isinstance(positions, (str, From))


def describe(positions: object) -> str:
    """A short label of a position selection, for reprs."""
    if isinstance(positions, slice):
        start = "" if positions.start is None else positions.start
        stop = "" if positions.stop is None else positions.stop
        return f"{start}:{stop}" + ("" if positions.step is None else f":{positions.step}")
    if isinstance(positions, tuple):
        return str(list(positions))
    if isinstance(positions, Tensor):
        kind = "mask" if positions.dtype == torch.bool else "per-row"
        return f"<{kind} {tuple(positions.shape)}>"
    if isinstance(positions, str):
        return repr(positions)
    return str(positions)


def real_bounds(real: Tensor) -> tuple[Tensor, Tensor]:
    """``(first, last)`` real position of each row of a ``(batch, pos)`` mask.

    Example:
        >>> import torch
        >>> [t.tolist() for t in real_bounds(torch.tensor([[0, 1, 1], [1, 1, 0]]).bool())]
        [[1, 0], [2, 1]]
    """
    mask = real.bool()
    if not bool(mask.any(1).all()):
        rows = (~mask.any(1)).nonzero().flatten().tolist()
        raise InputError(f"rows {rows} of the attention mask have no real token")
    pos = torch.arange(mask.shape[1], device=mask.device)
    first_ = torch.where(mask, pos, mask.shape[1]).amin(1)
    last = torch.where(mask, pos, -1).amax(1)
    return first_, last
