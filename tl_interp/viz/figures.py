"""Plotly figures for results: labelled heatmaps and bar charts (plotly imported lazily).

Diverging heatmaps are white at their centre -- zero, or the value a result says means
"nothing changed" (a patching sweep's base run) -- and the colour bar says which. Every
figure takes ``value_scale="symlog"`` (``tl_interp.viz._scale``) for values spanning decades.
"""

from typing import Any

from tl_interp._checks import renamed
from tl_interp.errors import OptionError, UnsupportedError
from tl_interp.viz._scale import Scale, ScaleName, check_scale

__all__ = ["result_figure", "heatmap"]


@renamed(scale="value_scale")
def heatmap(values: Any, *, x_labels: list[str], y_labels: list[str], x_title: str, y_title: str,
            title: str = "", colorbar: str = "", zmid: float = 0.0, value_scale: ScaleName = "linear",
            linthresh: float | None = None) -> Any:
    """A diverging heatmap with labelled axes (rows top to bottom in order), white at ``zmid``.

    Args:
        values: a 2-D tensor (rows = y labels).
        zmid: the value drawn white (the colour scale is symmetric around it); the colour bar
            names it when it is not 0.
        value_scale: ``"linear"`` or ``"symlog"`` (symlog of ``values - zmid``; the colour bar is
            labelled with real values, hover shows the real value).
        linthresh: symlog's linear half-width (default: the largest |value - zmid| / 1000).

    Example:
        >>> import torch
        >>> fig = heatmap(torch.eye(2), x_labels=["a", "b"], y_labels=["0", "1"], x_title="pos", y_title="layer")
        >>> fig.data[0].type, fig.data[0].zmid
        ('heatmap', 0.0)
    """
    import plotly.graph_objects as go
    import torch

    from tl_interp.viz._plotly import Figure

    check_scale(value_scale, linthresh)
    real = values.detach().cpu().double() if hasattr(values, "detach") else torch.as_tensor(values, dtype=torch.float64)
    how = Scale.make(real, value_scale, centre=zmid, linthresh=linthresh)
    bar: dict[str, Any] = {"title": {"text": how.label(colorbar), "side": "right"}}
    if value_scale == "symlog":
        bar["tickvals"], bar["ticktext"] = how.ticks()
    # duplicate token strings would merge heatmap columns: make each label unique by its index
    x = [f"{lab} ({i})" for i, lab in enumerate(x_labels)] if len(set(x_labels)) < len(x_labels) else list(x_labels)
    fig = Figure(go.Heatmap(z=how.draw(real).tolist(), x=x, y=list(y_labels), colorscale="RdBu",
                            zmid=0.0 if value_scale == "symlog" else zmid, customdata=real.tolist(),
                            hovertemplate="%{y} / %{x}: %{customdata:.4g}<extra></extra>", colorbar=bar))
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


@renamed(scale="value_scale")
def result_figure(result: Any, *, which: str = "values", title: str | None = None,
                  value_scale: ScaleName = "linear", linthresh: float | None = None) -> Any:
    """The natural figure for a Result: heatmap for 2-D values, bars for 1-D.

    A heatmap is white at the value the result says means "no change" (``result.neutral(which)``:
    a patching sweep's base run for its raw values, else 0), and its colour bar says so.

    Args:
        result: a ``tl_interp.results.Result``.
        which: ``"values"`` or the name of an extra / derived view of the same shape
            (e.g. ``"recovered"`` on patching results).
        title: defaults to the metric and model.
        value_scale: ``"linear"`` or ``"symlog"`` (heatmap colours or bar heights; labelled in real values).
        linthresh: symlog's linear half-width (default: the largest |difference| / 1000).

    Example:
        >>> import torch
        >>> from tl_interp.results import Provenance, Result
        >>> r = Result(torch.tensor([[0.1, -50.0]]), ("layer", "pos"), "diff", Provenance("m"))
        >>> fig = result_figure(r, value_scale="symlog")
        >>> fig.data[0].customdata[0][1], fig.data[0].colorbar.title.text
        (-50.0, 'values; symlog, linear within ±0.05')
    """
    import plotly.graph_objects as go

    from tl_interp.viz._plotly import Figure

    check_scale(value_scale, linthresh)
    values = _view(result, which)
    title = title or f"{result.metric} ({which}) - {result.provenance.model_id}"

    def labels(axis_index: int) -> list[str]:
        axis = result.axes[axis_index]
        return [result.label(axis, i) for i in range(values.shape[axis_index])]

    if values.ndim == 1:
        how = Scale.make(values, value_scale, linthresh=linthresh)
        real = values.detach().cpu().double().tolist()
        fig = Figure(go.Bar(x=labels(0), y=how.draw(values).tolist(), customdata=real,
                            hovertemplate="%{x}: %{customdata:.4g}<extra></extra>"))
        axis: dict[str, Any] = {"title": how.label(which)}
        if value_scale == "symlog":
            axis["tickvals"], axis["ticktext"] = how.ticks()
        fig.update_layout(title=title, xaxis_title=result.axes[0], yaxis=axis, xaxis=dict(type="category"))
        return fig
    if values.ndim == 3:  # e.g. (layer, pos, head): show the strongest head at each cell
        index = values.abs().argmax(-1, keepdim=True)
        values = values.gather(-1, index).squeeze(-1)
        title += f" (largest |value| over {result.axes[2]})"
    if values.ndim != 2:
        raise UnsupportedError(f"no default figure for {values.ndim}-D values ({which!r}, axes {result.axes}); "
                               "plot result.to_frame() yourself")
    centre, what = result.neutral(which)
    return heatmap(values, x_labels=labels(1), y_labels=labels(0), x_title=result.axes[1],
                   y_title=result.axes[0], title=title, colorbar=what, zmid=centre, value_scale=value_scale,
                   linthresh=linthresh)
