"""The run context: what a hook needs to know about the forward pass it is running in.

A hook function sees one activation tensor. To honour a selection such as ``positions="last"``
(each row's last real token) or ``positions=3`` during a key-value-cached generation step, it
also needs to know which positions of the sequence the activation covers and which of them
are padding. The code that runs the model -- ``Intervention.run`` / ``applied`` and the
engine's stacked passes -- describes that here, in a context variable that the hooks read:

- ``real``: ``(batch, total)`` boolean, the real (non-pad) tokens of the whole sequence so far;
  ``None`` when the forward pass had no attention mask (every position is real, as the
  model itself treats them);
- ``offset``: the absolute position of the activation's first position (a key-value-cached
  generation step, or a pass the engine runs from a cached prefix);
- ``tokens``: the token ids when known (``(batch, total)``), for positions found by token;
- ``offset_known``: False when a generation cache of unknown length is in use, so absolute
  positions can't be placed (position selections then refuse to run);
- ``padding_known``: False when the model tokenised a list of strings itself, so nothing
  here knows where its rows end (selections that depend on padding then refuse to run).

Context variables are per thread (and per asyncio task), so a context never leaks between
threads.
"""

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from torch import Tensor

__all__ = ["RunContext", "current", "running"]


@dataclass(frozen=True)
class RunContext:
    """The batch layout of the forward pass in progress (see the module docstring)."""

    real: Tensor | None = None
    offset: int = 0
    tokens: Tensor | None = None
    padding_known: bool = True
    offset_known: bool = True

    def rows(self, start: int, stop: int) -> "RunContext":
        """The context of rows ``start:stop`` (one group of a stacked pass)."""
        return RunContext(None if self.real is None else self.real[start:stop], self.offset,
                          None if self.tokens is None else self.tokens[start:stop], self.padding_known,
                          self.offset_known)


_CURRENT: ContextVar[RunContext | None] = ContextVar("tl_interp_run_context", default=None)


def current() -> RunContext | None:
    """The context of the forward pass in progress, or ``None`` outside tl_interp's runs."""
    return _CURRENT.get()


@contextlib.contextmanager
def running(context: RunContext) -> Iterator[RunContext]:
    """Make ``context`` current for the duration of a ``with`` block (restored on exit)."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)
