"""``MetricSet``: several metrics that read the same positions, scored from one set of logits."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_interp.errors import InputError
from tl_interp.metrics._metric import Metric, Reader

__all__ = ["MetricSet"]


@dataclass(frozen=True, eq=False)
class MetricSet:
    """Several metrics read from the same logits (one forward pass scores them all).

    Example:
        >>> import torch
        >>> from tl_interp.metrics import accuracy, answer_prob
        >>> ms = MetricSet({"acc": accuracy(1, positions=-1), "p": answer_prob(1, positions=-1)})
        >>> {k: v.tolist() for k, v in ms.per_prompt(torch.zeros(2, 3, 4)).items()}
        {'acc': [0.0, 0.0], 'p': [0.25, 0.25]}
    """

    metrics: Mapping[str, Metric]

    def __post_init__(self) -> None:
        if not self.metrics:
            raise InputError("a MetricSet needs at least one metric")
        first = next(iter(self.metrics.values()))
        for name, m in self.metrics.items():
            if not isinstance(m, Metric):
                raise InputError(f"MetricSet member {name!r} is not a tl_interp Metric")
            if not _same_positions(m.positions, first.positions):
                raise InputError(f"MetricSet members must read the same positions; {name!r} reads {m.positions!r}, "
                                 f"the first reads {first.positions!r}")

    @property
    def name(self) -> str:
        return "+".join(self.metrics)

    @property
    def positions(self) -> Reader:
        return next(iter(self.metrics.values())).positions

    def at(self, batch: Any) -> "MetricSet":
        """Every member bound to ``batch`` (see ``Metric.at``)."""
        return MetricSet({k: m.at(batch) for k, m in self.metrics.items()})

    def read(self, logits: Tensor, batch: Any = None) -> Tensor:
        return next(iter(self.metrics.values())).read(logits, batch)

    def score(self, read: Tensor) -> dict[str, Tensor]:
        return {k: m.score(read) for k, m in self.metrics.items()}

    def per_prompt(self, logits: Tensor, batch: Any = None) -> dict[str, Tensor]:
        """Each member's per-prompt values; ``batch`` as in ``Metric.read``."""
        return self.score(self.read(logits, batch))


def _same_positions(a: Reader, b: Reader) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    return a == b
