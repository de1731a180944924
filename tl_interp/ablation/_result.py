"""The result of an ablation scan: the effect of ablating each unit, with intervals."""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from tl_interp._checks import check_count

from tl_interp.results import Result, number, register_result, short

__all__ = ["AblationResult"]


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class AblationResult(Result):
    """``values``: mean change of the metric when each unit is ablated (ablated - unablated).

    Extras: ``ci_low``/``ci_high`` (bootstrap interval over prompts, same shape; only with a
    per-prompt metric), ``ablated`` (the metric under ablation), ``base`` (the unablated
    metric, a scalar).
    """

    kind: ClassVar[str] = "ablation"

    @property
    def base(self) -> Tensor:
        return self.extras["base"]

    def ranking(self, k: int | None = None) -> list[dict[str, Any]]:
        """Units ordered by how much ablating them hurts (the metric's bad direction first).

        Args:
            k: how many units (default: all); at least 1.
        """
        if k is not None:
            check_count(k, "k", what="ranking(k)")
        higher_is_better = bool(self.provenance.settings.get("higher_is_better", True))
        flat = self.values.flatten()
        order = flat.argsort(descending=not higher_is_better).tolist()[: k or flat.numel()]
        nan = flat.new_full(flat.shape, float("nan"))
        lo = self.extras["ci_low"].flatten() if "ci_low" in self.extras else nan
        hi = self.extras["ci_high"].flatten() if "ci_high" in self.extras else nan
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

    def _headline(self) -> str:
        worst = ", ".join(f"{short(r['unit'])} {r['effect']:+.3g}" for r in self.ranking(3))
        return f"unablated {number(self.base)}; most damaging: {worst}"

    def _summary_lines(self) -> list[str]:
        lines = [f"{'unablated':>24}: {number(self.base)}", "most damaging first (change when ablated, 95% CI):"]
        for r in self.ranking(10):
            ci = f"  [{r['ci_low']:+.3g}, {r['ci_high']:+.3g}]" if not math.isnan(r["ci_low"]) else ""
            lines.append(f"{short(r['unit']):>24}: {r['effect']:+.4g}{ci}")
        return lines

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "AblationResult":
        return cls(**fields)
