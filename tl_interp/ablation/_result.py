"""The result of an ablation scan: the effect of ablating each unit, with intervals."""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from tl_interp._checks import retired
from tl_interp.results._ranking import Ranking, check_k
from tl_interp.errors import OptionError
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

    def top(self, k: int | None = None, *, absolute: bool = True, largest: bool = True) -> Ranking:
        """The ``k`` units whose ablation changes the metric most (``Result.top``'s options), labelled
        like ``"L3 H2"``, with the columns ``index``, ``ci_low`` and ``ci_high``.

        The most damaging units first: ``top(k, absolute=False, largest=False)`` for a metric where
        higher is better (``largest=self.higher_is_better is False``: where lower is).
        """
        flat = self.values.flatten()
        k = check_k(k, "AblationResult.top", flat.numel())
        nan = flat.new_full(flat.shape, float("nan"))
        lo = self.extras["ci_low"].flatten() if "ci_low" in self.extras else nan
        hi = self.extras["ci_high"].flatten() if "ci_high" in self.extras else nan
        shape = self.values.shape

        def unit(i: int) -> str:
            index = [int(j) for j in torch.unravel_index(torch.tensor(i), shape)]
            return " ".join(self.label(a, j) for a, j in zip(self.axes, index))

        indices = [tuple(int(j) for j in torch.unravel_index(torch.tensor(i), shape)) for i in range(flat.numel())]
        return Ranking.of(flat, unit, k, absolute=absolute, largest=largest, value_name="effect",
                          columns={"index": indices, "ci_low": lo.tolist(), "ci_high": hi.tolist()})

    @property
    def higher_is_better(self) -> bool:
        """Whether the metric improves upwards (its bad direction, where damage shows, is down)."""
        return bool(self.provenance.settings.get("higher_is_better", True))

    def _damaging(self, k: int = 10) -> Ranking:
        """The ``k`` units whose ablation hurts most (the metric's bad direction first)."""
        return self.top(k, absolute=False, largest=not self.higher_is_better)

    @retired("top(k) (most damaging first: top(k, absolute=False, largest=False) when higher is better)")
    def ranking(self, k: int | None = None) -> list[dict[str, Any]]:
        """Units ordered by how much ablating them hurts, as dicts (retired: ``top``)."""
        if k is not None:
            check_k(k, "AblationResult.ranking", self.values.numel())
        r = self._damaging(k or self.values.numel())
        return [{"unit": u, "index": i, "effect": e, "ci_low": lo, "ci_high": hi}
                for u, e, i, lo, hi in zip(r.labels, r.values, r.columns["index"], r.columns["ci_low"],
                                           r.columns["ci_high"])]

    def _headline(self) -> str:
        shown = self._damaging(min(3, self.values.numel()))  # a headline: up to 3
        worst = ", ".join(f"{short(unit)} {effect:+.3g}" for unit, effect in shown)
        return f"unablated {number(self.base)}; most damaging: {worst}"

    def _summary_lines(self) -> list[str]:
        lines = [f"{'unablated':>24}: {number(self.base)}", "most damaging first (change when ablated, 95% CI):"]
        r = self._damaging(min(10, self.values.numel()))  # a summary: up to 10
        for unit, effect, lo, hi in zip(r.labels, r.values, r.columns["ci_low"], r.columns["ci_high"]):
            ci = f"  [{lo:+.3g}, {hi:+.3g}]" if not math.isnan(lo) else ""
            lines.append(f"{short(unit):>24}: {effect:+.4g}{ci}")
        return lines

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "AblationResult":
        return cls(**fields)
