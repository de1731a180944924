"""What every tl_interp trainer shares: seeding and threads, the LR schedule, card numbers,
provenance and how a trained model's files are written.

Determinism: a trainer seeds ``torch`` and its data generators from one ``seed`` and runs
on a fixed number of intra-op threads (``fixed_threads``), so the same name, steps, seed
and thread count give bit-identical weights. Cards record the command that reproduces them
(``python -m tl_interp.models.train NAME --steps N --seed S``), library versions and times.
"""

import contextlib
import math
import platform
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import metadata
from typing import Any

import torch

__all__ = ["SCHEDULE", "warmup_cosine", "sig", "fixed_threads", "command", "provenance"]

SCHEDULE = "linear warm-up over 5% of steps, then cosine decay to 10% of lr"


def warmup_cosine(steps: int) -> Callable[[int], float]:
    """The LR multiplier of ``SCHEDULE`` for ``torch.optim.lr_scheduler.LambdaLR``.

    Example:
        >>> f = warmup_cosine(100)
        >>> round(f(0), 3), f(4), round(f(99), 3)
        (0.2, 1.0, 0.1)
    """
    warmup = max(1, steps // 20)

    def _warmup_cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return 0.1 + 0.45 * (1.0 + math.cos(math.pi * progress))

    return _warmup_cosine


def sig(x: float, digits: int = 6) -> float:
    """``x`` to ``digits`` significant digits (card numbers stay readable and exact enough).

    Example:
        >>> sig(3.14159265, 3)
        3.14
    """
    return float(f"{x:.{digits}g}")


@contextlib.contextmanager
def fixed_threads(n: int) -> Iterator[None]:
    """Run the body with ``n`` torch intra-op threads (results depend on it), then restore.

    Example:
        >>> before = torch.get_num_threads()
        >>> with fixed_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def command(name: str, *, steps: int, seed: int, threads: int = 1) -> str:
    """The command that reproduces a run: ``python -m tl_interp.models.train NAME --steps N --seed S``
    (and ``--threads T`` when the run did not use one thread: the weights depend on it).

    Example:
        >>> command("s5-mlp", steps=10, seed=0)
        'python -m tl_interp.models.train s5-mlp --steps 10 --seed 0'
        >>> command("s5-mlp", steps=10, seed=0, threads=2)
        'python -m tl_interp.models.train s5-mlp --steps 10 --seed 0 --threads 2'
    """
    return f"python -m tl_interp.models.train {name} --steps {steps} --seed {seed}" + (
        f" --threads {threads}" if threads != 1 else "")


def provenance(
    name: str, *, steps: int, seed: int, seconds: Mapping[str, float], libraries: Sequence[str] = ()
) -> dict[str, Any]:
    """The card's ``provenance``: command, steps, seed, timings, threads and versions.

    Args:
        name: The trained model's or SAE's name.
        steps: Optimiser steps.
        seed: The run's seed.
        seconds: Named wall times, e.g. ``{"training_seconds": 12.3}`` (rounded to 0.1 s).
        libraries: Distributions whose versions matter besides torch and transformer-lens.

    Returns:
        A JSON-ready dict.

    Example:
        >>> provenance("s5-mlp", steps=1, seed=0, seconds={"training_seconds": 0.04})["training_seconds"]
        0.0
    """
    return {
        "command": command(name, steps=steps, seed=seed, threads=torch.get_num_threads()),
        "steps": steps,
        "seed": seed,
        **{key: round(value, 1) for key, value in seconds.items()},
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        **{dist.replace("-", "_"): metadata.version(dist) for dist in ("transformer-lens", *libraries)},
        "python": platform.python_version(),
    }
