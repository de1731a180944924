"""Colour and axis scales of figures: linear, or symmetric-log with honest tick labels.

``value_scale="symlog"`` draws ``sign(d) * log10(1 + |d| / linthresh)`` of the differences ``d``
from a centre (0, or a base value), as matplotlib's ``SymLogNorm`` does, so small and large
differences of both signs are both visible (seed 000's per-layer difference heatmaps). The
colour bar or axis ticks are placed at round values of the real quantity and labelled with
them, never with the transformed numbers; hover shows the real value.
"""

import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from tl_interp.errors import OptionError

__all__ = ["Scale", "check_scale", "symlog"]

ScaleName = Literal["linear", "symlog"]


def symlog(values: Tensor, linthresh: float) -> Tensor:
    """``sign(v) * log10(1 + |v| / linthresh)``: linear within ±linthresh, logarithmic beyond.

    Example:
        >>> symlog(torch.tensor([-99.0, 0.0, 9.0]), 1.0).tolist()
        [-2.0, 0.0, 1.0]
    """
    return values.sign() * torch.log10(1 + values.abs() / linthresh)


def check_scale(scale: str, linthresh: float | None) -> None:
    """Refuse an unknown scale or a non-positive ``linthresh`` (before anything is drawn)."""
    if scale not in ("linear", "symlog"):
        raise OptionError(f"value_scale={scale!r}; choose 'linear' or 'symlog'")
    if linthresh is not None and not (math.isfinite(linthresh) and linthresh > 0):
        raise OptionError(f"linthresh={linthresh!r} must be a positive number (the half-width of the linear "
                          "region around the centre)")
    if linthresh is not None and scale != "symlog":
        raise OptionError("linthresh= is the symlog scale's linear region; pass value_scale='symlog' with it")


@dataclass(frozen=True)
class Scale:
    """How values become colours (or bar heights): ``draw`` gives what plotly plots, ``ticks`` the labels.

    Example:
        >>> s = Scale.make(torch.tensor([-100.0, 0.5, 10.0]), "symlog", centre=0.0, linthresh=1.0)
        >>> s.draw(torch.tensor([-100.0]))[0].item() < -2, s.ticks()[1][:3]
        (True, ['-100', '-10', '0'])
    """

    name: ScaleName
    centre: float
    linthresh: float
    top: float  # the largest |value - centre|

    @classmethod
    def make(cls, values: Tensor, name: str, *, centre: float = 0.0, linthresh: float | None = None) -> "Scale":
        check_scale(name, linthresh)
        d = (values.detach().double().cpu() - centre).abs()
        d = d[torch.isfinite(d)]
        top = float(d.max()) if d.numel() else 0.0
        if linthresh is None:  # three decades below the largest difference are drawn logarithmically
            linthresh = top / 1000 if top > 0 else 1.0
        return cls(name, float(centre), float(linthresh), top)  # type: ignore[arg-type]

    def draw(self, values: Tensor) -> Tensor:
        """What plotly draws: the values (linear) or symlog of their differences from the centre."""
        v = values.detach().double().cpu()
        return v if self.name == "linear" else symlog(v - self.centre, self.linthresh)

    def ticks(self) -> tuple[list[float], list[str]]:
        """Symlog only: positions (transformed) and labels (real values) at centre ± linthresh * 10^k."""
        decades = max(0, math.ceil(math.log10(max(self.top / self.linthresh, 1.0))))
        # ±linthresh sits only log10(2) from the centre: beside whole decades its label would overlap
        real = [self.linthresh * 10 ** k for k in range(0 if decades < 2 else 1, decades + 1)]
        offsets = [-r for r in reversed(real)] + [0.0] + real
        where = symlog(torch.tensor(offsets, dtype=torch.float64), self.linthresh).tolist()
        return where, [f"{self.centre + r:.3g}" for r in offsets]

    def label(self, what: str) -> str:
        """The colour bar's (or axis's) title: what is drawn, where its centre is, the symlog region."""
        if self.centre and "white" not in what:
            what = f"{what}; white = {self.centre:.4g}"
        return what if self.name == "linear" else f"{what}; symlog, linear within ±{self.linthresh:.3g}"
