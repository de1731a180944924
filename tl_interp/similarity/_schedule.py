"""Long similarity work in stages: how long it will take, said before it starts, and one progress bar.

A stage is a batch of rows (permutations or bootstrap resamples) and a ``build()`` that prepares
what the rows share (a Gram matrix, sorted dissimilarities) and returns ``evaluate(block, start)``
with its block size. With ``announce``, every stage is built and timed on its first block, the
total is extrapolated and printed (to stderr) if it is longer than ``_QUIET_SECONDS``, and what
each stage prepared is released before the next one is built, so only one stage's memory is
held at a time; the timed blocks are kept, not recomputed.
"""

from collections.abc import Callable
from dataclasses import dataclass
import sys
import time

import torch
from torch import Tensor
from tqdm.auto import tqdm

__all__ = ["Stage", "run_stages"]

_CALIBRATION_ROWS = 8  # rows each stage is timed on before the estimate
_QUIET_SECONDS = 10.0  # shorter work is not announced


@dataclass(frozen=True)
class Stage:
    """``items`` rows to evaluate; ``build() -> (evaluate(block, start) -> values, block size)``."""

    label: str
    items: Tensor
    build: Callable[[], tuple[Callable[[Tensor, int], Tensor], int]]


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _estimate(stages: list[Stage], done: list[list[Tensor]]) -> list[float]:
    """Build each stage, evaluate its first rows and return the extrapolated seconds of each stage."""
    seconds = []
    for stage, parts in zip(stages, done):
        start = time.perf_counter()
        evaluate, block = stage.build()
        prepared = time.perf_counter()
        rows = min(block, _CALIBRATION_ROWS, stage.items.shape[0])
        parts.append(evaluate(stage.items[:rows], 0))
        per_row = (time.perf_counter() - prepared) / rows
        seconds.append((prepared - start) + per_row * (stage.items.shape[0] - rows))
    return seconds


def run_stages(stages: list[Stage], *, what: str, progress: bool, announce: bool) -> list[Tensor]:
    """Every stage's values over its rows, in order; see the module docstring."""
    done: list[list[Tensor]] = [[] for _ in stages]
    if announce:
        seconds = _estimate(stages, done)
        if sum(seconds) > _QUIET_SECONDS:
            longest = max(range(len(stages)), key=seconds.__getitem__)
            print(f"{what}: about {_duration(sum(seconds))} to go on this machine (each of {len(stages)} stages timed "
                  f"on its first {_CALIBRATION_ROWS} rows; the longest: {stages[longest].label}, "
                  f"{_duration(seconds[longest])})", file=sys.stderr, flush=True)
    remaining = sum(s.items.shape[0] for s in stages) - sum(p.shape[0] for parts in done for p in parts)
    with tqdm(total=remaining, desc=what, disable=not progress, delay=2) as bar:
        for stage, parts in zip(stages, done):
            start = sum(p.shape[0] for p in parts)
            if start == stage.items.shape[0]:
                continue
            bar.set_postfix_str(stage.label, refresh=False)
            evaluate, block = stage.build()
            for first in range(start, stage.items.shape[0], block):
                parts.append(evaluate(stage.items[first:first + block], first))
                bar.update(parts[-1].shape[0])
            del evaluate  # release what the stage prepared before the next one builds
    return [torch.cat(parts) for parts in done]
