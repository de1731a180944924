"""``SteeringReport``: the typed result of ``steering.evaluate``.

``values`` is accuracy over ``("vector", "scale", "task")``; extras hold the other
metrics (``prob``, ``logit_diff``, ``changed``, ``on_target``) with ``*_ci_low``/``*_ci_high``
bootstrap bounds, the unsteered baseline per task (``baseline_<metric>``), and per-prompt
values (``pp_<metric>``: ``(vector, scale, prompt)``; ``base_pp_<metric>``:
``(prompt,)``). Rows ``random ~ <vector>`` are the mean over random-vector seeds.
"""

import math
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from tl_interp._checks import renamed, retired
from tl_interp.results._ranking import Ranking, check_k
from tl_interp.errors import SelectionError, TlInterpDeprecationWarning
from tl_interp.results import Result, register_result, short
from tl_interp.stats import bootstrap_mean_ci

__all__ = ["SteeringReport"]

_METRIC_NAMES = {"accuracy": "accuracy", "target_accuracy": "accuracy among target tokens", "prob": "answer probability", "logit_diff": "logit diff vs unsteered answer",
                 "changed": "top-1 changed", "on_target": "top-1 on target"}


def _check_metric(metric: str) -> None:
    if metric not in _METRIC_NAMES:
        raise SelectionError(f"unknown metric {metric!r}; use one of {list(_METRIC_NAMES)}")


@register_result
@dataclass(frozen=True, eq=False, repr=False)
class SteeringReport(Result):
    """Steering battery results; see the module docstring for the layout."""

    kind: ClassVar[str] = "steering"
    meta: dict[str, Any] = field(default_factory=dict)

    # -- lookups ---------------------------------------------------------------------------
    @property
    def vectors(self) -> tuple[str, ...]:
        return self.labels["vector"]

    @property
    def scales(self) -> list[float]:
        return list(self.meta["scales"])

    @property
    def multipliers(self) -> list[float]:
        """The old name of ``scales``."""
        warnings.warn("SteeringReport.multipliers is now SteeringReport.scales", TlInterpDeprecationWarning,
                      stacklevel=2)
        return self.scales

    @property
    def tasks(self) -> tuple[str, ...]:
        return self.labels["task"]

    def _v(self, vector: str) -> int:
        if vector not in self.vectors:
            raise SelectionError(f"no vector {vector!r} in this report; it has {list(self.vectors)}")
        return self.vectors.index(vector)

    def _m(self, scale: float) -> int:
        if float(scale) not in self.scales:
            raise SelectionError(f"no scale {scale!r} in this report; it has {self.scales}")
        return self.scales.index(float(scale))

    def _t(self, task: str) -> int:
        if task not in self.tasks:
            raise SelectionError(f"no task {task!r} in this report; it has {list(self.tasks)}")
        return self.tasks.index(task)

    def metric_label(self, metric: str) -> str:
        """The axis label of a metric (``"logit_diff"`` -> ``"logit diff vs unsteered answer"``)."""
        _check_metric(metric)
        return _METRIC_NAMES[metric]

    def metric_values(self, metric: str = "accuracy") -> Tensor:
        """``(vector, scale, task)`` means of a metric."""
        _check_metric(metric)
        return self.values if metric == "accuracy" else self.extras[metric]

    def _interval(self, metric: str) -> tuple[Tensor, Tensor]:
        return self.extras[f"{metric}_ci_low"], self.extras[f"{metric}_ci_high"]

    def _prompt_index(self, task: str) -> list[int]:
        self._t(task)
        return [i for i, p in enumerate(self.meta["prompts"]) if p["column"] == task]

    def _token(self, token_id: int) -> str:
        return self.meta["vocab"].get(str(int(token_id)), f"<{int(token_id)}>")

    # -- views ------------------------------------------------------------------------------
    def table(self, metric: str = "accuracy", *, intervals: bool = True) -> Any:
        """Rows: vector x scale (and the unsteered baseline); columns: tasks.

        With ``intervals``, cells read ``mean [low, high]`` (95% bootstrap over prompts).
        """
        import pandas as pd

        _check_metric(metric)
        mean, (low, high) = self.metric_values(metric), self._interval(metric)
        b = [self.extras[f"baseline_{metric}{s}"] for s in ("", "_ci_low", "_ci_high")]

        def cell(m: float, lo: float, hi: float) -> Any:
            if math.isnan(m):
                return ""
            return f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if intervals else round(m, 4)

        rows = [{"vector": "unsteered", "scale": "",
                 **{t: cell(float(b[0][j]), float(b[1][j]), float(b[2][j])) for j, t in enumerate(self.tasks)}}]
        for i, v in enumerate(self.vectors):
            for k, m in enumerate(self.scales):
                rows.append({"vector": v, "scale": m,
                             **{t: cell(float(mean[i, k, j]), float(low[i, k, j]), float(high[i, k, j]))
                                for j, t in enumerate(self.tasks)}})
        return pd.DataFrame(rows)

    @renamed(multiplier="scale")
    def examples(self, vector: str, scale: float, task: str) -> Any:
        """Per-prompt rows: prompt, expected, unsteered answer, steered answer, correct."""
        import pandas as pd

        i, k = self._v(vector), self._m(scale)
        if i >= self.extras["pp_top1"].shape[0]:
            raise SelectionError(f"per-prompt answers are kept for the evaluated vectors, not for {vector!r}")
        rows = []
        for p in self._prompt_index(task):
            entry = self.meta["prompts"][p]
            steered = int(self.extras["pp_top1"][i, k, p])
            rows.append({"prompt": entry["prompt"], "expected": entry["answer"],
                         "unsteered": self._token(int(self.extras["base_pp_top1"][p])),
                         "steered": self._token(steered),
                         "correct": bool(steered == entry["answer_id"]) if entry["answer_id"] >= 0 else None,
                         "answer_prob": float(self.extras["pp_prob"][i, k, p])})
        return pd.DataFrame(rows)

    def top(self, k: int | None = None, *, task: str | None = None, metric: str = "accuracy", absolute: bool = True,
            largest: bool = True) -> Ranking:
        """The ``k`` evaluated (not control) (vector, scale) cells with the largest mean ``metric``
        (``Result.top``'s options; a signed metric such as ``logit_diff`` ranks by its value with
        ``absolute=False``), labelled ``"vector x4"`` (``"vector x4, task"`` over every task), with
        the columns ``vector``, ``scale`` and ``task``.

        Args:
            task: one task, or None for every (vector, scale, task) cell.
            metric: which mean: ``"accuracy"``, ``"prob"``, ``"logit_diff"`` ...
        """
        n_real = len(self.meta["vectors"])
        values = self.metric_values(metric)[:n_real]
        tasks = list(range(len(self.tasks))) if task is None else [self._t(task)]
        values = values[:, :, tasks]
        cells = [(i, m, tasks[j]) for i in range(values.shape[0]) for m in range(values.shape[1])
                 for j in range(values.shape[2])]
        k = check_k(k, "SteeringReport.top", len(cells))

        def label(c: int) -> str:
            i, m, t = cells[c]
            return f"{self.vectors[i]} x{self.scales[m]:g}" + ("" if task is not None else f", {self.tasks[t]}")

        return Ranking.of(values, label, k, absolute=absolute, largest=largest, value_name=metric,
                          columns={"vector": [self.vectors[i] for i, _, _ in cells],
                                   "scale": [self.scales[m] for _, m, _ in cells],
                                   "task": [self.tasks[t] for _, _, t in cells]})

    @retired("top(1, task=..., metric=..., absolute=False)")
    def best(self, task: str, metric: str = "accuracy") -> dict[str, Any]:
        """The evaluated vector and scale with the highest mean on ``task`` (retired: ``top``)."""
        return self._best(task, metric)

    def _best(self, task: str, metric: str = "accuracy") -> dict[str, Any]:
        top = self.top(1, task=task, metric=metric, absolute=False)
        return {"vector": top.columns["vector"][0], "scale": top.columns["scale"][0], metric: top.values[0]}

    @renamed(multiplier="scale")
    def compare(self, vector: str, scale: float, task: str, *, against: str = "random",
                metric: str = "accuracy", n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
        """The paired effect of ``vector`` at ``scale`` on ``task`` against a control.

        Args:
            against: ``"random"`` (the mean of its random vectors of the same norm, same
                scale) or ``"unsteered"``.

        Returns:
            ``effect`` (mean per-prompt difference), its 95% bootstrap interval
            (``ci_low``, ``ci_high``), both means and ``n`` prompts.
        """
        _check_metric(metric)
        i, k, idx = self._v(vector), self._m(scale), self._prompt_index(task)
        ours = self.extras[f"pp_{metric}"][i, k, idx].double()
        if against == "random":
            control = f"random ~ {vector}"
            if control not in self.vectors:
                raise SelectionError(f"no random control for {vector!r} (evaluate with Controls(random_seeds=...))")
            theirs = self.extras[f"pp_{metric}"][self._v(control), k, idx].double()
        elif against == "unsteered":
            theirs = self.extras[f"base_pp_{metric}"][idx].double()
        else:
            raise SelectionError(f"against must be 'random' or 'unsteered', not {against!r}")
        diff = ours - theirs
        low, high = bootstrap_mean_ci(diff, n_boot=n_boot, seed=seed) if len(idx) > 1 else (diff.mean(), diff.mean())
        return {"vector": vector, "scale": float(scale), "task": task, "against": against,
                "metric": metric, "mean": float(ours.mean()), "control_mean": float(theirs.mean()),
                "effect": float(diff.mean()), "ci_low": float(low), "ci_high": float(high), "n": len(idx)}

    # -- printouts ---------------------------------------------------------------------------
    def _best_rows(self) -> list[tuple[str, float, dict[str, Any]]]:
        """Per task: the unsteered accuracy and the best evaluated vector and scale."""
        base = self.extras["baseline_accuracy"]
        rows = []
        for j, task in enumerate(self.tasks):
            if bool(torch.isnan(self.values[..., j]).all()):
                continue
            rows.append((task, float(base[j]), self._best(task)))
        return rows

    def _headline(self) -> str:
        n_real = len(self.meta.get("vectors", self.vectors))
        rows = self._best_rows()
        best = ", ".join(f"{short(t, 16)} {b:.2f}->{r['accuracy']:.2f} ({short(r['vector'], 16)} x{r['scale']:g})"
                         for t, b, r in rows[:3])
        more = f", ... {len(rows) - 3} more tasks" if len(rows) > 3 else ""
        return (f"{n_real} vectors x {len(self.scales)} scales x {len(self.tasks)} tasks; accuracy unsteered->best: "
                f"{best}{more}")

    def _summary_lines(self) -> list[str]:
        lines = ["accuracy per task: unsteered -> the best evaluated vector at its best scale (.table() has every row)"]
        return lines + [f"{short(t):>24}: {b:.3f} -> {r['accuracy']:.3f}  ({r['vector']} x{r['scale']:g})"
                        for t, b, r in self._best_rows()]

    # -- figures (drawn by tl_interp.viz.steering) ---------------------------------------------
    @renamed(multiplier="scale")
    def figure(self, metric: str = "accuracy", *, scale: float | None = None,
               vectors: list[str] | None = None, title: str | None = None) -> Any:
        """Grouped bars of a metric by task, one bar per vector; see ``tl_interp.viz.steering.figure``."""
        from tl_interp.viz.steering import figure

        return figure(self, metric, scale=scale, vectors=vectors, title=title)

    def sweep_figure(self, task: str, metric: str = "accuracy", *, vectors: list[str] | None = None,
                     title: str | None = None) -> Any:
        """A metric against the scale on one task; see ``tl_interp.viz.steering.sweep_figure``."""
        from tl_interp.viz.steering import sweep_figure

        return sweep_figure(self, task, metric, vectors=vectors, title=title)

    # -- persistence ------------------------------------------------------------------------
    def _extra_meta(self) -> dict[str, Any]:
        return self.meta

    @classmethod
    def _rebuild(cls, extra_meta: dict[str, Any], **fields: Any) -> "SteeringReport":
        if "multipliers" in extra_meta:  # written before the vocabulary's "scale"
            extra_meta = {("scales" if k == "multipliers" else k): v for k, v in extra_meta.items()}
            fields["axes"] = tuple("scale" if a == "multiplier" else a for a in fields["axes"])
            fields["labels"] = {("scale" if k == "multiplier" else k): v for k, v in fields["labels"].items()}
        return cls(meta=extra_meta, **fields)
