"""The result of a patching sweep: metric per cell, the two baselines, a normalised view."""

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from tl_interp.results._ranking import Ranking, check_k
from tl_interp._checks import check_count
from tl_interp.errors import OptionError, UnsupportedError
from tl_interp.results import Result, number, register_result

__all__ = ["PatchingResult"]

_SAME = 1e-5  # a gap this small (relative) between the two runs is float32 rounding, not a difference


@register_result
@dataclass(frozen=True, eq=False, repr=False)
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
        """(patched - base) / (source - base): the fraction of the way to the source run.

        Undefined (an error) when the two runs give the same metric value, up to the float32
        rounding the metric is computed with (a relative gap below ``1e-5``): dividing by a
        rounding error would give arbitrary numbers."""
        base, source = self.base.double(), self.source.double()
        gap = source - base
        if bool((gap.abs() <= _SAME * (1 + torch.maximum(base.abs(), source.abs()))).any()):
            raise UnsupportedError(f"the clean and corrupted runs give the same metric value ({float(base.flatten()[0]):.6g}"
                                   f" vs {float(source.flatten()[0]):.6g}, within float32 rounding), so there is no "
                                   "gap to normalise by; read .values instead")
        return ((self.values.double() - base) / gap).float()

    @property
    def recovered(self) -> Tensor:
        """Alias of ``normalized`` for denoising sweeps (clean into corrupted)."""
        return self.normalized

    def top(self, k: int | None = None, *, by: str = "normalized", per: str | None = None, absolute: bool = True,
            largest: bool = True) -> Ranking:
        """The ``k`` cells with the largest |effect| (``Result.top``'s options), labelled ``"layer 3, pos 5"``.

        Args:
            by: rank the fraction recovered (``"normalized"``) or the raw metric (``"values"``).
        """
        if by not in ("normalized", "values"):
            raise OptionError(f"PatchingResult.top(by=...) takes 'normalized' or 'values', not {by!r}")
        k = check_k(k, "PatchingResult.top")
        values = self.normalized if by == "normalized" else self.values
        return self._ranking(values, k, per=per, absolute=absolute, largest=largest,
                             value_name=by)

    def neutral(self, which: str = "values") -> tuple[float, str]:
        """Raw values: the base run (an unpatched cell is white, not saturated), when it is one number;
        the normalised view: 0 (= the base run; 1 = the source run)."""
        if which == "values" and self.base.numel() == 1:
            return float(self.base), f"{self.metric}; white = base run {float(self.base):.4g}"
        if which in ("normalized", "recovered"):
            return 0.0, "fraction recovered (0 = base run, 1 = source run)"
        return 0.0, which

    def _headline(self) -> str:
        head = f"base {number(self.base)}, source {number(self.source)}"
        try:
            cells, what = self._top_cells(3, self.normalized), " (fraction recovered)"
        except UnsupportedError:  # no gap between the runs: the raw values are all there is
            cells, what = self._top_cells(3), ""
        return f"{head}; top: " + ", ".join(f"{where} {value:.4g}" for where, value in cells) + what

    def _summary_lines(self) -> list[str]:
        lines = [f"{'base run':>24}: {number(self.base)}", f"{'source run':>24}: {number(self.source)}"]
        try:
            recovered = self.normalized
        except UnsupportedError:
            return lines + ["  (the runs do not differ: no recovered fraction)"] + super()._summary_lines()
        raw = dict(self._top_cells(self.values.numel()))
        lines.append("the 10 cells of largest |recovered| (fraction of the way from base to source, raw value):")
        return lines + [f"{where:>24}: {value:+.3f}  ({raw[where]:.4g})" for where, value in self._top_cells(10, recovered)]

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "PatchingResult":
        return cls(**fields)
