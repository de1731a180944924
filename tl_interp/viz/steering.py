"""Plotly figures of a ``SteeringReport``: metric by task with 95% bars, and scale sweeps.

The drawing half of ``tl_interp.steering.SteeringReport``; its ``figure`` and
``sweep_figure`` methods call these (so this module never imports ``steering``: ``report`` is
a SteeringReport, read through its methods). Plotly is imported lazily.
"""

import math
from typing import Any

import torch

__all__ = ["figure", "sweep_figure"]


def _error_y(mean: torch.Tensor, low: torch.Tensor, high: torch.Tensor) -> dict[str, Any]:
    return dict(type="data", symmetric=False, array=(high - mean).tolist(), arrayminus=(mean - low).tolist())


def figure(report: Any, metric: str = "accuracy", *, scale: float | None = None,
           vectors: list[str] | None = None, title: str | None = None) -> Any:
    """Grouped bars: tasks on the x axis, one bar per vector (and unsteered), 95% error bars.

    Args:
        report: the steering report (a ``SteeringReport``).
        metric: which metric (``"accuracy"``, ``"prob"``, ``"logit_diff"``, ...).
        scale: show this scale for every vector; default each vector's best scale by its
            mean over tasks (the legend says which).
        vectors: which rows (default: every evaluated vector, and the random control of
            the one with the highest mean, so the chart stays readable).
        title: the figure's title.

    Returns:
        A plotly Figure.
    """
    import plotly.graph_objects as go

    from tl_interp.viz._plotly import Figure

    mean, (low, high) = report.metric_values(metric), report._interval(metric)
    tasks = [t for j, t in enumerate(report.tasks) if not bool(torch.isnan(mean[:, :, j]).all())]
    cols = [report._t(t) for t in tasks]
    fig = Figure()
    b = [report.extras[f"baseline_{metric}{s}"][cols].double() for s in ("", "_ci_low", "_ci_high")]
    fig.add_bar(name="unsteered", x=tasks, y=b[0].tolist(), error_y=_error_y(*b))
    if vectors is None:
        n_real = len(report.meta["vectors"])
        vectors = list(report.vectors[:n_real])
        if len(report.vectors) > n_real:
            top = int(torch.nan_to_num(mean[:n_real][..., cols].double(), nan=-math.inf).mean(-1).amax(-1).argmax())
            vectors.append(f"random ~ {report.vectors[top]}")
    for v in vectors:
        i = report._v(v)
        if scale is None:
            k = int(torch.nan_to_num(mean[i][:, cols].double(), nan=-math.inf).mean(-1).argmax())
        else:
            k = report._m(scale)
        y, lo, hi = (t[i, k, cols].double() for t in (mean, low, high))
        fig.add_bar(name=f"{v} x{report.scales[k]:g}", x=tasks, y=y.tolist(), error_y=_error_y(y, lo, hi))
    fig.update_layout(barmode="group", yaxis_title=report.metric_label(metric), xaxis_title="task",
                      title=title or f"Steering: {report.metric_label(metric)} by task ({report.provenance.model_id})",
                      legend=dict(orientation="h", y=-0.35), xaxis=dict(tickangle=-20), height=560)
    return fig


def sweep_figure(report: Any, task: str, metric: str = "accuracy", *,
                 vectors: list[str] | None = None, title: str | None = None) -> Any:
    """A metric against the scale for each vector on one task, with 95% bands.

    Args:
        report: the steering report (a ``SteeringReport``).
        task: which task (a column of the report).
        metric: which metric.
        vectors: which rows (default all).
        title: the figure's title.

    Returns:
        A plotly Figure.
    """
    import plotly.graph_objects as go

    from tl_interp.viz._plotly import Figure

    j = report._t(task)
    mean, (low, high) = report.metric_values(metric), report._interval(metric)
    fig = Figure()
    fig.add_hline(y=float(report.extras[f"baseline_{metric}"][j]), line_dash="dot", annotation_text="unsteered")
    for v in vectors or list(report.vectors):
        i = report._v(v)
        fig.add_scatter(x=report.scales, y=mean[i, :, j].tolist(), mode="lines+markers", name=v,
                        error_y=_error_y(mean[i, :, j], low[i, :, j], high[i, :, j]))
    fig.update_layout(xaxis_title="scale", yaxis_title=report.metric_label(metric),
                      title=title or f"{task}: {report.metric_label(metric)} vs scale")
    return fig
