"""The result of an ablation scan: the effect of ablating each unit, with intervals."""

from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from tl_interp.results import Result, register_result

__all__ = ["AblationResult"]


@register_result
@dataclass(frozen=True, eq=False)
class AblationResult(Result):
    """``values``: mean change of the metric when each unit is ablated (ablated - unablated).

    Extras: ``ci_low``/``ci_high`` (bootstrap interval over prompts, same shape), ``ablated``
    (the metric under ablation), ``base`` (the unablated metric, a scalar).
    """

    kind: ClassVar[str] = "ablation"

    @property
    def base(self) -> Tensor:
        return self.extras["base"]

    def ranking(self, k: int | None = None) -> list[dict[str, Any]]:
        """Units ordered by how much ablating them hurts (the metric's bad direction first)."""
        higher_is_better = bool(self.provenance.settings.get("higher_is_better", True))
        flat = self.values.flatten()
        order = flat.argsort(descending=not higher_is_better).tolist()[: k or flat.numel()]
        lo, hi = self.extras["ci_low"].flatten(), self.extras["ci_high"].flatten()
        rows = []
        for i in order:
            index, rem = [], i
            for n in reversed(self.values.shape):
                index.append(rem % n)
                rem //= n
            index.reverse()
            unit = " ".join(self.label(a, j) for a, j in zip(self.axes, index))
            rows.append({"unit": unit, "index": tuple(index), "effect": float(flat[i]),
                         "ci_low": float(lo[i]), "ci_high": float(hi[i])})
        return rows

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "AblationResult":
        return cls(**fields)
