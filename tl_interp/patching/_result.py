"""The result of a patching sweep: metric per cell, the two baselines, a normalised view."""

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from tl_interp.results import Result, register_result

__all__ = ["PatchingResult"]


@register_result
@dataclass(frozen=True, eq=False)
class PatchingResult(Result):
    """Metric values of patched runs, one per (layer, ...) cell.

    ``extras["base"]`` is the metric of the run being patched into (the corrupted run when
    denoising), ``extras["source"]`` that of the run patched from (the clean run when
    denoising); ``normalized`` is ``(value - base) / (source - base)``: 1 where patching one
    cell moves the metric all the way to the source run, 0 where it changes nothing.
    """

    kind: ClassVar[str] = "patching"

    @property
    def base(self) -> Tensor:
        return self.extras["base"]

    @property
    def source(self) -> Tensor:
        return self.extras["source"]

    @property
    def normalized(self) -> Tensor:
        """(patched - base) / (source - base): the fraction of the way to the source run."""
        return (self.values - self.base) / (self.source - self.base)

    @property
    def recovered(self) -> Tensor:
        """Alias of ``normalized`` for denoising sweeps (clean into corrupted)."""
        return self.normalized

    def top(self, k: int = 10, *, by: str = "normalized") -> list[tuple[str, float]]:
        """The k cells with the largest |effect|, as (label, value) pairs."""
        values = self.normalized if by == "normalized" else self.values
        flat = values.flatten()
        order = flat.abs().argsort(descending=True)[:k]
        out = []
        for i in order.tolist():
            index, rem = [], i
            for n in reversed(values.shape):
                index.append(rem % n)
                rem //= n
            index.reverse()
            label = ", ".join(f"{a} {self.label(a, j)}" for a, j in zip(self.axes, index))
            out.append((label, float(flat[i])))
        return out

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "PatchingResult":
        return cls(**fields)
