"""Plotly figures for results: labelled heatmaps and bar charts (plotly imported lazily)."""

from typing import Any

from tl_interp.errors import OptionError, UnsupportedError

__all__ = ["result_figure", "heatmap"]


def heatmap(values: Any, *, x_labels: list[str], y_labels: list[str], x_title: str, y_title: str,
            title: str = "", colorbar: str = "", zmid: float | None = 0.0) -> Any:
    """A diverging heatmap with labelled axes (rows top to bottom in order).

    Example:
        >>> import torch
        >>> fig = heatmap(torch.eye(2), x_labels=["a", "b"], y_labels=["0", "1"], x_title="pos", y_title="layer")
        >>> fig.data[0].type
        'heatmap'
    """
    import plotly.graph_objects as go

    z = values.detach().cpu().double().tolist() if hasattr(values, "detach") else values
    # duplicate token strings would merge heatmap columns: make each label unique by its index
    x = [f"{lab} ({i})" for i, lab in enumerate(x_labels)] if len(set(x_labels)) < len(x_labels) else list(x_labels)
    fig = go.Figure(go.Heatmap(z=z, x=x, y=list(y_labels), colorscale="RdBu", zmid=zmid,
                               colorbar=dict(title=colorbar)))
    fig.update_layout(title=title, xaxis_title=x_title, yaxis_title=y_title,
                      yaxis=dict(autorange="reversed", type="category"), xaxis=dict(type="category"),
                      height=max(300, 22 * len(y_labels) + 150))
    return fig


def _view(result: Any, which: str) -> Any:
    """The values a figure shows: ``"values"``, a derived view (a property such as
    ``"normalized"``) or an extra, of the values' shape."""
    import torch

    if which == "values":
        return result.values
    if which in result.extras:
        values = result.extras[which]
    else:
        derived = [name for name in dir(type(result)) if isinstance(getattr(type(result), name, None), property)
                   and not name.startswith("_")]
        if which not in derived:
            choices = ["values", *sorted(set(derived) | set(result.extras))]
            raise OptionError(f"figure(which={which!r}): this {type(result).__name__} has no such view; choose one of "
                              f"{', '.join(map(repr, choices))}")
        values = getattr(result, which)
    if not isinstance(values, torch.Tensor) or values.shape != result.values.shape:
        shape = tuple(values.shape) if isinstance(values, torch.Tensor) else type(values).__name__
        raise OptionError(f"figure(which={which!r}): that view has shape {shape}, not the values' "
                          f"{tuple(result.values.shape)}; plot it from result.to_frame() or .extras")
    return values


def result_figure(result: Any, *, which: str = "values", title: str | None = None) -> Any:
    """The natural figure for a Result: heatmap for 2-D values, bars for 1-D.

    Args:
        result: a ``tl_interp.results.Result``.
        which: ``"values"`` or the name of an extra / derived view of the same shape
            (e.g. ``"recovered"`` on patching results).
        title: defaults to the metric and model.
    """
    import plotly.graph_objects as go

    values = _view(result, which)
    title = title or f"{result.metric} ({which}) - {result.provenance.model_id}"

    def labels(axis_index: int) -> list[str]:
        axis = result.axes[axis_index]
        return [result.label(axis, i) for i in range(values.shape[axis_index])]

    if values.ndim == 1:
        fig = go.Figure(go.Bar(x=labels(0), y=values.detach().cpu().double().tolist()))
        fig.update_layout(title=title, xaxis_title=result.axes[0], yaxis_title=which, xaxis=dict(type="category"))
        return fig
    if values.ndim == 3:  # e.g. (layer, pos, head): show the strongest head at each cell
        index = values.abs().argmax(-1, keepdim=True)
        values = values.gather(-1, index).squeeze(-1)
        title += f" (largest |value| over {result.axes[2]})"
    if values.ndim != 2:
        raise UnsupportedError(f"no default figure for {values.ndim}-D values ({which!r}, axes {result.axes}); "
                               "plot result.to_frame() yourself")
    return heatmap(values, x_labels=labels(1), y_labels=labels(0), x_title=result.axes[1],
                   y_title=result.axes[0], title=title, colorbar=which)
