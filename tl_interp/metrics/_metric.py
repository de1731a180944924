"""The metric protocol: a ``Metric`` scores logits per prompt and says where it reads.

A ``Metric`` is a function of logits ``(batch, pos, d_vocab) -> scalar``, exactly as
TransformerLens's patching functions take it, so one metric object serves both libraries.
It also says *where it reads* (its ``Reader``) -- by default each prompt's last real token
(``"last"``) -- which lets studies compute logits only at those positions, and it evaluates
per prompt and over stacked variants (leading axes before ``batch``) without a Python loop.
``Metric.at(batch)`` binds the reader to a batch's rows.
"""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_interp.errors import InputError, SelectionError, ShapeError

__all__ = ["Metric", "Reader", "Answers"]

Answers = int | Int[Tensor, "batch"]
Reader: TypeAlias = Literal["last"] | int | Int[Tensor, "batch"] | None


@dataclass(frozen=True, eq=False)
class Metric:
    """A per-prompt score of logits, averaged over prompts when called like a TL metric.

    Attributes:
        name: what it measures, for labels (``"logit_diff"``).
        positions: where it reads: ``"last"`` (each row's last real token), an int (the same
            position in every row), a ``(batch,)`` index tensor, or ``None`` (all positions).
        score: ``logits at positions -> per-prompt values``: gets ``(..., batch, d_vocab)``
            when ``positions`` is set, ``(..., batch, pos, d_vocab)`` when it is ``None``.
        higher_is_better: the direction of improvement (for normalising and ranking).
    """

    name: str
    positions: Reader
    score: Callable[[Tensor], Tensor]
    higher_is_better: bool = True
    narrow: Callable[[Reader], tuple[Tensor, "Metric"]] | None = field(default=None, repr=False)

    def narrowed(self) -> tuple[Tensor, "Metric"] | None:
        """The vocabulary entries this metric reads, when it reads only a few, and the same
        metric scoring logits of those entries alone (``(..., batch, len(columns))``, in that
        order), reading the same positions; None when it may read any entry. Lets a study
        unembed only those columns.

        Example:
            >>> import torch
            >>> from tl_interp.metrics import logit_diff
            >>> logits = torch.randn(2, 3, 9)
            >>> columns, small = logit_diff(torch.tensor([7, 2]), 4, positions=-1).narrowed()
            >>> columns.tolist(), torch.equal(small(logits[..., columns]), logit_diff(torch.tensor([7, 2]), 4, positions=-1)(logits))
            ([2, 4, 7], True)
        """
        return None if self.narrow is None else self.narrow(self.positions)

    def at(self, batch: Any) -> "Metric":
        """This metric reading ``batch``'s rows: ``"last"`` becomes each row's last real token;
        a literal position that is padding in some row is an error.

        Example:
            >>> import torch
            >>> from tl_interp.models import Tokenized
            >>> batch = Tokenized(torch.tensor([[5, 6, 0]]), torch.tensor([[1, 1, 0]]), torch.tensor([1]), [["a", "b", "-"]])
            >>> from tl_interp.metrics import accuracy
            >>> accuracy(2).at(batch).positions.tolist()
            [1]
        """
        return replace(self, positions=_bind_positions(self.positions, batch, self.name))

    def read(self, logits: Float[Tensor, "*variants batch pos d_vocab"], batch: Any = None) -> Tensor:
        """The logits this metric reads: ``(..., batch, d_vocab)`` (or all positions).

        ``batch`` (the ``Tokenized`` batch the logits come from) binds the metric first (``at``).
        """
        if batch is not None:
            return self.at(batch).read(logits)
        if self.positions == "last" and logits.ndim >= 3 and logits.shape[-3] > 1:
            raise InputError(f"metric {self.name} reads each prompt's last real token, but it was given logits of "
                             f"{logits.shape[-3]} prompts and no batch, so it cannot know where each row ends (a "
                             "right-padded row would be read at its padding); call metric(logits, batch) with the "
                             "Tokenized batch (or bind once: metric.at(batch)), or give positions=-1 if no row is "
                             "right-padded")
        positions = -1 if self.positions == "last" else self.positions
        if positions is None:
            return logits
        if isinstance(positions, int):
            return logits[..., positions, :]
        batch = logits.shape[-3]
        if positions.shape != (batch,):
            raise ShapeError(f"metric {self.name}: it reads one position per row for {positions.shape[0]} "
                             f"rows, the logits have batch={batch}")
        rows = torch.arange(batch, device=logits.device)
        return logits[..., rows, positions.to(logits.device).long(), :]

    def per_prompt(self, logits: Float[Tensor, "*variants batch pos d_vocab"],
                   batch: Any = None) -> Float[Tensor, "*variants batch"]:
        """One value per prompt (and per leading variant axis); ``batch`` as in ``read``."""
        return self.score(self.read(logits, batch))

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"], batch: Any = None) -> Float[Tensor, ""]:
        """The mean over prompts: the scalar TransformerLens's patching functions expect.

        Args:
            logits: the model's output for the batch.
            batch: the ``Tokenized`` batch the logits come from, so ``"last"`` reads each row's
                last real token; needed with more than one row unless the metric is bound
                (``metric.at(batch)``) or reads a literal position.

        Example:
            >>> import torch
            >>> from tl_interp.models import Tokenized
            >>> batch = Tokenized(torch.tensor([[5, 6, 0], [5, 6, 7]]), torch.tensor([[1, 1, 0], [1, 1, 1]]),
            ...                   torch.tensor([1, 2]), [["a", "b", "-"], ["a", "b", "c"]])
            >>> from tl_interp.metrics import logit_diff
            >>> logits = torch.zeros(2, 3, 4); logits[0, 1, 2] = logits[1, 2, 2] = 4.0
            >>> float(logit_diff(2, 0)(logits, batch))
            4.0
        """
        return self.per_prompt(logits, batch).mean(-1)


def _bind_positions(positions: Reader, batch: Any, name: str) -> Reader:
    mask = batch.attention_mask.bool()
    seq = mask.shape[1]
    if positions == "last":
        return batch.last_index.long()
    if positions is None:
        return None
    index = (torch.full((mask.shape[0],), positions, dtype=torch.long) if isinstance(positions, int)
             else positions.long())
    if index.shape != (mask.shape[0],):
        raise ShapeError(f"metric {name}: it reads {index.shape[0]} positions for a batch of {mask.shape[0]} prompts")
    if bool(((index < -seq) | (index >= seq)).any()):
        raise SelectionError(f"metric {name}: positions {index.tolist()} are out of range for {seq} positions")
    index = index % seq
    pads = (~mask[torch.arange(mask.shape[0]), index.to(mask.device)]).nonzero().flatten().tolist()
    if pads:
        raise SelectionError(f"metric {name}: it reads position {positions!r}, which is padding in rows {pads}; use "
                             "positions='last' (each prompt's last real token), the default")
    return index.to(batch.tokens.device)
