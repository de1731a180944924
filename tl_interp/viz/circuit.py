"""Pictures of circuits: the circuit as an offline SVG graph, the faithfulness curve as a figure.

``circuit_html`` draws nodes by layer (``input`` at the bottom, ``logits`` at the top; a
layer's heads in a row, its MLP to their right, a little higher, as it reads them), edges
as curves into the receiver's q / k / v port (left / middle / right of a head), their width
proportional to |score| and their colour its sign (blue positive, red negative, as every
table in the toolkit). Plain inline SVG, no JavaScript: it shows in any notebook viewer and
in ``viz.Report`` pages opened offline. ``curve_figure`` is the plotly figure (imported
lazily) of a ``FaithfulnessCurve``: f against the edge budget per method, with intervals.
"""

import html
import math
import re
from typing import Any

from tl_interp._checks import checked
from tl_interp.errors import InputError
from tl_interp.viz.html import _fmt, _generic, summary_for, table_html

__all__ = ["circuit_html", "curve_figure"]

_BLUE, _RED, _GREY = "#2166ac", "#b2182b", "#888888"
_PORT = {"q": -0.28, "k": 0.0, "v": 0.28, None: 0.0}  # where on a head's bottom edge q / k / v enter
_MAX_EDGES = 400  # beyond this the picture is a hairball: draw the largest |score| edges, say so
_EDGE = re.compile(r"^(?P<s>[^->]+)->(?P<r>[^<]+)(?:<(?P<x>[qkv])>)?$")


def _layout(nodes: list[str], all_nodes: tuple[str, ...]) -> tuple[dict[str, tuple[float, float]], int, int]:
    """(x, y) of each node: one band per layer that holds a circuit node (others collapse)."""
    def where(node: str) -> tuple[int, float, float]:  # (layer band, column, vertical offset in the band)
        if node == "input":
            return -1, 0.0, 0.0
        if node == "logits":
            return 10**9, 0.0, 0.0
        m = re.match(r"^a(\d+)\.h(\d+)$", node)
        if m:
            return int(m[1]), float(m[2]), 0.0
        return int(node[1:]), -1.0, -0.45  # the MLP: right of its layer's heads, higher up

    n_cols = 1 + max((int(m[1]) for m in (re.match(r"^a\d+\.h(\d+)$", n) for n in all_nodes) if m), default=-1)
    spots = {n: where(n) for n in nodes}
    bands = sorted({b for b, _, _ in spots.values()}, reverse=True)  # logits first (top of the picture)
    width = max(n_cols + 1, 2)
    pos = {}
    for node, (band, col, dy) in spots.items():
        x = (width - 1) / 2 if node in ("input", "logits") else (n_cols if col < 0 else col)
        pos[node] = (x, bands.index(band) + dy)
    return pos, len(bands), width


@checked
def circuit_html(circuit: Any, *, max_edges: int = _MAX_EDGES) -> str:
    """An inline-SVG picture of a ``Circuit`` (nodes by layer, edges weighted by score).

    Example:
        >>> from types import SimpleNamespace
        >>> from tl_interp.circuits._circuit import Circuit
        >>> g = SimpleNamespace(nodes=("input", "a0.h0", "logits"),
        ...                     edges=("input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "input->logits", "a0.h0->logits"))
        >>> page = circuit_html(Circuit(("input->a0.h0<v>", "a0.h0->logits"), g))
        >>> page.count("<path"), "a0.h0" in page
        (2, True)
    """
    edges = list(circuit.edges)
    graph_edges = tuple(circuit.graph.edges)
    score = {}
    if circuit.scores is not None:
        values = circuit.scores.detach().double().cpu().tolist()
        score = {e: v for e, v in zip(graph_edges, values)}
    shown = edges
    if len(edges) > max_edges:
        shown = sorted(edges, key=lambda e: -abs(score.get(e, 0.0)))[:max_edges]
    nodes = [n for n in circuit.graph.nodes if n in {p for e in shown for p in _ends(e)[:2]}]
    pos, n_bands, width = _layout(nodes, tuple(circuit.graph.nodes))
    dx, dy, pad, box_w, box_h = 78, 64, 30, 58, 22
    w, h = pad * 2 + dx * (width - 1) + box_w, pad * 2 + dy * max(n_bands - 1, 0) + box_h

    def xy(node: str) -> tuple[float, float]:
        x, y = pos[node]
        return pad + box_w / 2 + dx * x, pad + box_h / 2 + dy * y

    top = max((abs(score.get(e, 0.0)) for e in shown), default=0.0)
    paths = []
    for edge in sorted(shown, key=lambda e: abs(score.get(e, 0.0))):  # strongest drawn last, on top
        sender, receiver, letter = _ends(edge)
        (x1, y1), (x2, y2) = xy(sender), xy(receiver)
        x2 += _PORT[letter] * box_w
        y1, y2 = y1 - box_h / 2, y2 + box_h / 2  # leave the sender's top, enter the receiver's bottom
        s = score.get(edge)
        if s is None or top == 0 or not math.isfinite(s):
            stroke, width_px, tip = _GREY, 1.5, edge
        else:
            stroke, width_px, tip = (_BLUE if s >= 0 else _RED), 0.6 + 4.4 * abs(s) / top, f"{edge}: {s:.4g}"
        bend = max(abs(y1 - y2) / 2, 12)
        dash = ' stroke-dasharray="4 2"' if letter == "q" else (' stroke-dasharray="1 2"' if letter == "k" else "")
        paths.append(f'<path d="M{x1:.1f},{y1:.1f} C{x1:.1f},{y1 - bend:.1f} {x2:.1f},{y2 + bend:.1f} {x2:.1f},{y2:.1f}" '
                     f'fill="none" stroke="{stroke}" stroke-opacity="0.75" stroke-width="{width_px:.2f}"{dash}>'
                     f"<title>{html.escape(tip)}</title></path>")
    boxes = []
    for node in nodes:
        x, y = xy(node)
        fill = "#fde9c8" if node.startswith("m") else ("#e8e8e8" if node in ("input", "logits") else "#dbe9f6")
        boxes.append(f'<g><rect x="{x - box_w / 2:.1f}" y="{y - box_h / 2:.1f}" width="{box_w}" height="{box_h}" rx="5" '
                     f'fill="{fill}" stroke="#555"/><text x="{x:.1f}" y="{y + 4:.1f}" text-anchor="middle">'
                     f"{html.escape(node)}</text></g>")
    origin = f" from {html.escape(circuit.method)}" if getattr(circuit, "method", "") else ""
    note = (f"; drawing the {len(shown)} largest |score| edges" if len(shown) < len(edges) else "")
    legend = ("edge width ∝ |score|, blue positive, red negative; into a head: q dashed (left), k dotted (middle), "
              "v solid (right)" if score else "no scores: every edge drawn alike; q dashed, k dotted, v solid")
    return (f'<div class="tl-interp-circuit" style="font-family:system-ui,sans-serif;font-size:13px;overflow-x:auto">'
            f"<div><b>Circuit</b>{origin}: {len(edges)} of {len(graph_edges)} edges, {len(circuit.nodes)} nodes{note}</div>"
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{w:.0f}" height="{h:.0f}" role="img" '
            f'style="font:11px sans-serif">{"".join(paths)}{"".join(boxes)}</svg>'
            f'<div style="color:#555;font-size:12px">{html.escape(legend)}</div></div>')


def _ends(edge: str) -> tuple[str, str, str | None]:
    m = _EDGE.match(edge)
    if m is None:
        raise InputError(f"not an edge name: {edge!r}")
    return m["s"], m["r"], m["x"]


@checked
def curve_figure(curve: Any, *, title: str | None = None) -> Any:
    """Faithfulness f against the edge budget (log axis), one line per method, interval bands.

    Example:
        >>> import torch
        >>> from tl_interp.circuits._curve import FaithfulnessCurve
        >>> from tl_interp.results import Provenance
        >>> c = FaithfulnessCurve(torch.tensor([[0.2, 0.9]]), ("method", "budget"), "logit diff", Provenance("m"),
        ...     labels={"method": ("eap",), "budget": ("1%", "100%")},
        ...     extras={"budgets": torch.tensor([0.01, 1.0]), "f_low": torch.tensor([[0.1, 0.8]]),
        ...             "f_high": torch.tensor([[0.3, 1.0]]), "cpr": torch.tensor([0.5]), "cmd": torch.tensor([0.4])})
        >>> [t.name for t in curve_figure(c).data if t.showlegend is not False]
        ['eap (CPR 0.5, CMD 0.4)']
    """
    import plotly.graph_objects as go

    from tl_interp.viz._plotly import Figure

    x = [b * 100 for b in curve.extras["budgets"].tolist()]
    fig = Figure()
    palette = ["#2166ac", "#d6604d", "#1b7837", "#762a83", "#e08214", "#4d4d4d"]
    for i, method in enumerate(curve.labels["method"]):
        color = palette[i % len(palette)]
        f = curve.values[i].double().tolist()
        if "f_low" in curve.extras:
            lo, hi = curve.extras["f_low"][i].tolist(), curve.extras["f_high"][i].tolist()
            fig.add_trace(go.Scatter(x=x + x[::-1], y=hi + lo[::-1], fill="toself", fillcolor=color, opacity=0.15,
                                     line=dict(width=0), hoverinfo="skip", showlegend=False))
        name = f"{method} (CPR {_fmt(float(curve.extras['cpr'][i]))}, CMD {_fmt(float(curve.extras['cmd'][i]))})"
        fig.add_trace(go.Scatter(x=x, y=f, mode="lines+markers", name=name, line=dict(color=color)))
    fig.add_hline(y=1.0, line_dash="dash", line_color="#999")
    fig.update_layout(title=title or f"faithfulness of top-edge circuits ({curve.metric}) - {curve.provenance.model_id}",
                      xaxis=dict(type="log", title="edge budget (% of the graph's edges)"),
                      yaxis_title="f = (circuit - corrupted) / (clean - corrupted)", height=420)
    return fig


@summary_for("faithfulness_curve")
def _curve_summary(curve: Any) -> str:
    e = curve.extras
    if not {"cpr", "cpr_low", "cpr_high", "cmd", "cmd_low", "cmd_high"} <= set(e) or "method" not in curve.labels:
        return _generic(curve)
    rows = [[m, float(e["cpr"][i]), f"[{float(e['cpr_low'][i]):.3g}, {float(e['cpr_high'][i]):.3g}]",
             float(e["cmd"][i]), f"[{float(e['cmd_low'][i]):.3g}, {float(e['cmd_high'][i]):.3g}]"]
            for i, m in enumerate(curve.labels["method"])]
    head = table_html(["method", "CPR (higher better)", "95% CI", "CMD (lower better)", "95% CI"], rows)
    budgets = list(curve.labels["budget"])
    f_rows = [[m] + [float(v) for v in curve.values[i].tolist()] for i, m in enumerate(curve.labels["method"])]
    body = "<div>f at each budget:</div>" + table_html(["method", *budgets], f_rows, digits=3)
    if "survival" in e:
        s_rows = [[m] + [float(v) for v in e["survival"][i].tolist()] for i, m in enumerate(curve.labels["method"])]
        body += ("<div>top-edge survival (mean fraction of each budget's top edges still in the top when the prompts "
                 "are resampled):</div>" + table_html(["method", *budgets], s_rows, digits=3))
    return head + body


@summary_for("edge_stability")
def _stability_summary(result: Any) -> str:
    if not {"ks", "survival", "survival_low", "survival_high", "ci_low", "ci_high", "in_top_k"} <= set(result.extras):
        return _generic(result)
    ks = result.ks
    rows = [[k, float(s), f"[{float(lo):.3g}, {float(hi):.3g}]"] for k, s, lo, hi in
            zip(ks, result.survival.tolist(), result.extras["survival_low"].tolist(),
                result.extras["survival_high"].tolist())]
    order = result.values.abs().argsort(descending=True)[:ks[0]].tolist()
    edges = [[result.label("edge", i), float(result.values[i]), f"[{float(result.extras['ci_low'][i]):.3g}, "
              f"{float(result.extras['ci_high'][i]):.3g}]", float(result.extras["in_top_k"][i])] for i in order[:20]]
    return (table_html(["k", "top-k survival", "95% CI"], rows)
            + f"<div>the top {min(ks[0], 20)} edges:</div>"
            + table_html(["edge", "score", "95% CI", f"in top-{ks[0]} of resamples"], edges, digits=3))
