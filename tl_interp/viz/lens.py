"""Pictures of lens and direct-logit-attribution results (plotly imported lazily).

- ``lens_heatmap``: layer x position (or layer x prompt), each cell the lens's top token with
  its probability as the colour, as the published logit / tuned lens plots draw it;
- ``answer_trajectories``: each tracked answer's probability across layers;
- ``dla_figure``: a layer x head heatmap for ``by="head"``, bars of the largest components otherwise;
- ``lens_html`` / ``dla_html``: the notebook / report summaries (no JavaScript).
"""

import html
from typing import Any

from tl_interp._checks import check_count
from tl_interp.errors import OptionError, SelectionError

__all__ = ["lens_heatmap", "answer_trajectories", "dla_figure", "lens_html", "dla_html"]


def _columns(result: Any, row: int) -> tuple[list[tuple[int, int]], list[str], str]:
    """The (row, slot) cells of the heatmap's columns, their labels and the x-axis title."""
    n, width = result.values.shape[1], result.values.shape[2]
    if not -n <= row < n:
        raise SelectionError(f"row {row} is out of range for {n} prompts")
    row %= n
    mask, pos, tok = result.extras["mask"], result.extras["position"], result.extras["tokens"]
    if width == 1 and n > 1:  # one position per prompt: prompts side by side
        cells = [(i, 0) for i in range(n)]
        return cells, [f"{i}: {result.token(int(tok[i, 0]))!r}" for i in range(n)], "prompt (token read)"
    cells = [(row, s) for s in range(width) if bool(mask[row, s])]
    return cells, [f"{int(pos[r, s])}: {result.token(int(tok[r, s]))!r}" for r, s in cells], f"position (prompt {row})"


def lens_heatmap(result: Any, *, row: int = 0, color: str = "prob", title: str | None = None) -> Any:
    """Layer x position heatmap of a ``LensResult``: text = top token, colour = its probability
    (``color="prob"``), the KL to the final distribution (``"kl"``) or the entropy (``"entropy"``).

    Example:
        >>> import tl_interp as ti
        >>> lens = ti.lens.logit_lens(ti.models.load("ordinal-4l"), "after june comes", positions="all", progress=False)
        >>> fig = lens_heatmap(lens)
        >>> fig.data[0].type, len(fig.data[0].x)
        ('heatmap', 4)
    """
    import plotly.graph_objects as go

    from tl_interp.viz._plotly import Figure

    views = {"prob": result.extras["top_probs"][..., 0], "kl": result.values, "entropy": result.extras["entropy"]}
    if color not in views:
        raise OptionError(f"lens_heatmap(color={color!r}): choose 'prob', 'kl' or 'entropy'")
    cells, x, x_title = _columns(result, row)
    layers = [result.label("layer", i) for i in range(result.values.shape[0])]
    z = [[float(views[color][layer, r, s]) for r, s in cells] for layer in range(len(layers))]
    text = [[f"{result.token(int(result.extras['top_tokens'][layer, r, s, 0]))}" for r, s in cells]
            for layer in range(len(layers))]
    hover = [[f"p={float(result.extras['top_probs'][layer, r, s, 0]):.3f} KL={float(result.values[layer, r, s]):.3f} "
              f"H={float(result.extras['entropy'][layer, r, s]):.3f}" for r, s in cells] for layer in range(len(layers))]
    scale = dict(prob=("Blues", 0.0, 1.0), kl=("Reds", 0.0, None), entropy=("Viridis", 0.0, None))[color]
    fig = Figure(go.Heatmap(z=z, x=x, y=layers, text=text, texttemplate="%{text}", customdata=hover,
                               hovertemplate="%{y} / %{x}<br>top %{text!r}<br>%{customdata}<extra></extra>",
                               colorscale=scale[0], zmin=scale[1], zmax=scale[2],
                               colorbar=dict(title={"prob": "top-1 p", "kl": "KL (nats)", "entropy": "H (nats)"}[color])))
    fig.update_layout(title=title or f"{result.metric} - {result.provenance.model_id}", xaxis_title=x_title,
                      yaxis_title="layer (resid_pre; final = resid_post)", xaxis=dict(type="category"),
                      yaxis=dict(type="category", autorange="reversed"), height=max(320, 22 * len(layers) + 160))
    return fig


def answer_trajectories(result: Any, *, row: int = 0, pos: int | None = None, title: str | None = None) -> Any:
    """Each answer's probability (log scale) across layers at one read position.

    Example:
        >>> import tl_interp as ti
        >>> lens = ti.lens.logit_lens(ti.models.load("ordinal-4l"), "after june comes", answers=[" july", " june"],
        ...                           progress=False)
        >>> [trace.name for trace in answer_trajectories(lens).data]
        [' july', ' june']
    """
    import plotly.graph_objects as go

    from tl_interp.viz._plotly import Figure

    if "answer_prob" not in result.extras:
        raise OptionError("answer_trajectories: the lens tracked no answers; run it with answers=[...]")
    slot = result._slot(row, pos)
    layers = [result.label("layer", i) for i in range(result.values.shape[0])]
    fig = Figure()
    for j, name in enumerate(result.answer_labels):
        probs = result.extras["answer_prob"][:, row, slot, j].double().tolist()
        ranks = result.extras["answer_rank"][:, row, slot, j].tolist()
        fig.add_trace(go.Scatter(x=layers, y=probs, mode="lines+markers", name=name, customdata=ranks,
                                 hovertemplate="layer %{x}: p=%{y:.3g}, rank %{customdata}<extra></extra>"))
    at = int(result.extras["position"][row, slot])
    fig.update_layout(title=title or f"{result.metric.split(' KL')[0]}: answer probabilities, prompt {row}, position {at}",
                      xaxis_title="layer", yaxis_title="probability", yaxis_type="log", xaxis=dict(type="category"))
    return fig


def dla_figure(result: Any, *, k: int | None = None, title: str | None = None) -> Any:
    """A ``DLAResult`` pictured: layer x head heatmap of the mean contribution (``by="head"``),
    else bars of the ``k`` components with the largest mean |contribution| (at most as many as
    there are; default up to 30), in model order.

    Example:
        >>> import torch, tl_interp as ti
        >>> tokens = torch.arange(2, 12)[None].repeat(1, 2)
        >>> dla = ti.lens.direct_logit_attribution(ti.models.load("induction-2l"), tokens, 7, by="head",
        ...                                        positions=14, progress=False)
        >>> dla_figure(dla).data[0].type
        'heatmap'
    """
    import plotly.graph_objects as go

    from tl_interp.viz._plotly import Figure
    from tl_interp.viz.figures import heatmap

    if k is not None:
        check_count(k, "k", what="ti.viz.lens.dla_figure")
    title = title or f"direct logit attribution to {result.metric} - {result.provenance.model_id}"
    mean = result.values.double().mean(1)
    if result.by == "head":
        heads = result.heads().double().mean(-1)
        return heatmap(heads, x_labels=[str(h) for h in range(heads.shape[1])],
                       y_labels=[str(layer) for layer in range(heads.shape[0])], x_title="head", y_title="layer",
                       title=title, colorbar="mean contribution")
    k = min(30, mean.numel()) if k is None else check_count(k, "k", high=mean.numel(), what="ti.viz.lens.dla_figure",
                                                            items="components")
    keep = sorted(mean.abs().argsort(descending=True)[:k].tolist())
    fig = Figure(go.Bar(x=[result.label("component", i) for i in keep], y=[float(mean[i]) for i in keep]))
    fig.update_layout(title=title, xaxis_title=result.by, yaxis_title="mean contribution (logit units)",
                      xaxis=dict(type="category"))
    return fig


def lens_html(result: Any) -> str:
    """A lens result's summary: per layer, the top tokens and KL at the first prompt's last read position."""
    from tl_interp.viz.html import table_html

    rows = []
    for entry in result.layer_table(0):
        top = ", ".join(f"{t!r} {p:.2f}" for t, p in entry["top"][:3])
        rows.append([entry["layer"], top, entry["kl"], entry["entropy"]]
                    + [v for key, v in entry.items() if key.startswith("p(")])
    columns = ["layer", "top tokens", "KL to final", "entropy"] + [f"p({a})" for a in result.answer_labels]
    slot = result._slot(0, None)
    at = int(result.extras["position"][0, slot])
    note = (f"<div>prompt 0, position {at} ({html.escape(repr(result.token(int(result.extras['tokens'][0, slot]))))}); "
            f"{result.values.shape[1]} prompts x {result.values.shape[2]} read positions in the result</div>")
    return note + table_html(columns, rows)


def dla_html(result: Any) -> str:
    """A DLA result's summary: the largest components and what the frozen norm leaves out."""
    from tl_interp.viz.html import table_html

    approx = result.approximation()
    rows = [[name, value] for name, value in result.top(min(10, result.values.shape[0]))]  # up to 10
    logit = float(result.extras["logit"].double().mean())
    return (f"<div>by {html.escape(result.by)}; mean logit {logit:.4g} = components + constant "
            f"{float(result.extras['constant'].double().mean()):.4g} (sum error {approx['max_sum_error']:.2g})</div>"
            + table_html(["component", "mean contribution"], rows)
            + f"<div>frozen vs renormalised norm: up to {approx['max_frozen_vs_renormalised']:.3g}; LayerNorm "
              f"centring term: up to {approx['max_abs_centring']:.3g}</div>")

