"""Plotly figures of geometry results (plotly is imported inside each function)."""

from typing import Any

import torch

from tl_interp._checks import check_layer
from tl_interp.stats import bootstrap_mean_ci

__all__ = ["paired_figure", "angle_histogram", "angles_figure"]

_COLOURS = {"shift": "#1f77b4", "rotation": "#d62728", "shift_rotation": "#2ca02c", "target": "#d62728",
            "other": "#1f77b4", "shuffled": "#2ca02c", "pearson": "#9467bd", "spearman": "#8c564b",
            "kendall": "#e377c2"}


def _band(fig: Any, x: list[str], low: torch.Tensor, high: torch.Tensor, colour: str, row: int, name: str) -> None:
    import plotly.graph_objects as go

    fig.add_trace(go.Scatter(x=x + x[::-1], y=high.tolist() + low.flip(0).tolist(), fill="toself", opacity=0.2,
                             line=dict(width=0), fillcolor=colour, name=name, showlegend=False,
                             hoverinfo="skip"), row=row, col=1)


def paired_figure(result: Any, *, title: str | None = None) -> Any:
    """Residuals (solid) against unrelated-pair baselines (dashed), mean cosine, correlations."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from tl_interp.viz._plotly import savable

    x = list(result.labels["layer"])
    methods = result.methods
    n_rows = 3 if methods else 2
    titles = ["relative residual of B given A (dashed: re-paired baseline)", "per-pair cosine (mean, 95% CI)"]
    fig = savable(make_subplots(rows=n_rows, cols=1, shared_xaxes=True, subplot_titles=titles + (
        ["correlation of cosine with the score"] if methods else [])))
    ex = result.extras
    for fit in ("shift", "rotation", "shift_rotation"):
        colour = _COLOURS[fit]
        fig.add_trace(go.Scatter(x=x, y=ex[f"{fit}_residual"].tolist(), name=fit, line=dict(color=colour)), 1, 1)
        fig.add_trace(go.Scatter(x=x, y=ex[f"baseline_{fit}"].tolist(), name=f"{fit} (re-paired)",
                                 line=dict(color=colour, dash="dash")), 1, 1)
    _band(fig, x, ex["cosine_low"], ex["cosine_high"], "#7f7f7f", 2, "cosine CI")
    fig.add_trace(go.Scatter(x=x, y=ex["mean_cosine"].tolist(), name="mean cosine", line=dict(color="#7f7f7f")), 2, 1)
    for method in methods:
        fig.add_trace(go.Scatter(x=x, y=ex[f"corr_{method}"].tolist(), name=method,
                                 line=dict(color=_COLOURS[method])), 3, 1)
    fig.update_layout(title=title or f"paired geometry ({result.provenance.model_id})", height=300 * n_rows)
    fig.update_xaxes(title_text="layer", type="category", row=n_rows, col=1)
    return fig


def angle_histogram(result: Any, layer: int = -1, *, bins: int = 30, title: str | None = None) -> Any:
    """Histogram of the per-pair angles (degrees) at one layer."""
    import plotly.graph_objects as go

    from tl_interp.viz._plotly import Figure

    n_layers = result.angles.shape[0] if result.angles.ndim > 1 else 1  # (n,) angles: one layer
    layer = check_layer(layer, n_layers, "angle_histogram", from_end=True)
    angles = result.angles if result.angles.ndim == 1 else result.angles[layer]
    label = "" if result.angles.ndim == 1 else f" at layer {result.labels['layer'][layer]}"
    fig = Figure(go.Histogram(x=angles.tolist(), nbinsx=bins))
    fig.update_layout(title=title or f"angle between paired states{label}", xaxis_title="angle (degrees)",
                      yaxis_title="pairs")
    return fig


def angles_figure(result: Any, *, alpha: float = 0.05, title: str | None = None) -> Any:
    """Mean layer-to-layer angle per kind with bootstrap intervals; t-values, filled where significant."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from tl_interp.viz._plotly import savable

    x = list(result.labels["layer"])
    fig = savable(make_subplots(rows=2, cols=1, shared_xaxes=True, subplot_titles=[
        "angle to the next layer (degrees; mean, 95% CI over prompts)",
        f"paired t (filled: corrected p <= {alpha})"]))
    low, high = bootstrap_mean_ci(result.values, seed=result.provenance.seed or 0)
    for i, kind in enumerate(result.labels["kind"]):
        _band(fig, x, low[i], high[i], _COLOURS[kind], 1, kind)
        fig.add_trace(go.Scatter(x=x, y=result.values[i].mean(-1).tolist(), name=kind,
                                 line=dict(color=_COLOURS[kind])), 1, 1)
    significant = result.significant(alpha)
    for comparison, t in result.statistics.items():
        filled = significant[comparison].tolist()
        colour = _COLOURS[comparison.split(" vs ")[1]]
        fig.add_trace(go.Scatter(x=x, y=t.tolist(), mode="lines+markers", name=comparison,
                                 line=dict(color=colour, dash="dot"),
                                 marker=dict(size=9, color=[colour if s else "white" for s in filled],
                                             line=dict(color=colour, width=1.5))), 2, 1)
    fig.update_layout(title=title or f"layer-to-layer angles ({result.provenance.model_id})", height=650)
    fig.update_xaxes(title_text="layer", type="category", row=2, col=1)
    return fig
