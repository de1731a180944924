"""``_repr_html_`` of results and interventions: a compact colored table plus provenance.

Plain HTML and inline styles, no JavaScript, so a notebook cell ending in a result shows it
anywhere (Jupyter, VS Code, GitHub's notebook viewer) and nothing is fetched to decide how.
A result is summarised, not dumped: a heatmap table when its values are small enough to
read (<= 40 x 40 cells), else its 10 largest cells; a study adds its own summary by
registering a function for its ``kind`` with ``summary_for``.
"""

import html
import json
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from tl_interp._checks import renamed

__all__ = ["result_html", "intervention_html", "heat_table", "table_html", "colored_spans", "summary_for", "svg_bars",
           "ink", "visible"]

MAX_SIDE = 40
_SUMMARIES: dict[str, Callable[[Any], str]] = {}
_BOX = 'style="font-family:system-ui,sans-serif;font-size:13px;max-width:100%;overflow-x:auto"'


def summary_for(kind: str) -> Callable[[Callable[[Any], str]], Callable[[Any], str]]:
    """Decorator: the HTML summary of results of ``kind`` (shown above the provenance)."""
    def register(fn: Callable[[Any], str]) -> Callable[[Any], str]:
        _SUMMARIES[kind] = fn
        return fn
    return register


def _fmt(value: float) -> str:
    if math.isnan(value):
        return "nan"
    return f"{value:.3g}"


def _color(value: float, scale: float) -> str:
    # plotly's RdBu, as the figures use: negative red, positive blue, white at zero
    if not math.isfinite(value) or scale == 0:
        return "#f4f4f4"
    a = min(abs(value) / scale, 1.0)
    rgb = (33, 102, 172) if value > 0 else (178, 24, 43)
    mix = [round(255 + (c - 255) * a) for c in rgb]
    return "#{:02x}{:02x}{:02x}".format(*mix)


def _luminance(hex_colour: str) -> float:
    """WCAG relative luminance of ``#rrggbb``."""
    def channel(c: int) -> float:
        s = c / 255
        return s / 12.92 if s <= 0.03928 else ((s + 0.055) / 1.055) ** 2.4

    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b)


def ink(background: str) -> str:
    """The text colour, black or white, with the higher WCAG contrast on ``background``.

    Example:
        >>> ink("#2166ac"), ink("#f4f4f4")
        ('#fff', '#000')
    """
    lum = _luminance(background)
    return "#000" if (lum + 0.05) / 0.05 >= 1.05 / (lum + 0.05) else "#fff"


_SHOWN = {" ": "\u2423", "\n": "\u21b5", "\t": "\u21e5", "\r": "\u240d"}  # ␣ ↵ ⇥ ␍


def visible(token: str) -> str:
    """A token as text a reader can see: newlines always as ↵, a whitespace-only token as ␣ / ↵ / ⇥.

    Example:
        >>> visible(" "), visible("\\n\\n"), visible(" cat"), visible("a\\nb"), visible("")
        ('␣', '↵↵', ' cat', 'a↵b', '∅')
    """
    if not token:
        return "\u2205"  # ∅: an empty token would be an invisible span
    if not token.strip():
        return "".join(_SHOWN.get(c, "\u00b7") for c in token)
    return token.replace("\r", _SHOWN["\r"]).replace("\n", _SHOWN["\n"])


@renamed(scale="color_max")
def colored_spans(tokens: Sequence[str], values: Sequence[float], *, color_max: float | None = None,
                  focus: int | None = None) -> str:
    """Tokens as inline spans colored by value (hover shows it), the text black or white by
    contrast, whitespace tokens made visible (``visible``); ``focus`` gets an outline;
    ``color_max`` is the absolute value drawn at full colour (default: the largest)."""
    top = color_max if color_max is not None else max((abs(v) for v in values if math.isfinite(v)), default=0.0)
    out = []
    for i, (tok, v) in enumerate(zip(tokens, values)):
        text = html.escape(visible(str(tok)))
        border = "outline:1px solid #000;" if i == focus else ""
        bg = _color(v, top)
        out.append(f"<span title='{v:.4g}' style='background:{bg};color:{ink(bg)};{border}white-space:pre'>"
                   f"{text}</span>")
    return "".join(out)


@renamed(rows="lines")
def table_html(columns: Sequence[str], lines: Sequence[Sequence[Any]], *, digits: int = 4) -> str:
    """A plain HTML table: a header of ``columns``, then one row per entry of ``lines`` (floats to
    ``digits`` significant digits)."""
    def cell(v: Any) -> str:
        text = f"{v:.{digits}g}" if isinstance(v, float) else str(v)
        return f'<td style="padding:2px 6px;border:1px solid #ddd">{html.escape(text)}</td>'

    head = "".join(f'<th style="padding:2px 6px;border:1px solid #ddd;background:#f4f4f4">{html.escape(str(c))}</th>'
                   for c in columns)
    body = "".join("<tr>" + "".join(cell(v) for v in line) + "</tr>" for line in lines)
    return f'<table style="border-collapse:collapse;margin:4px 0"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def heat_table(values: Tensor, row_labels: Sequence[str], col_labels: Sequence[str], *,
               corner: str = "") -> str:
    """A 2-D table whose cells are colored by value (diverging around zero)."""
    v = values.detach().double().cpu()
    finite = v[torch.isfinite(v)]
    scale = float(finite.abs().max()) if finite.numel() else 0.0
    head = "".join(f'<th style="padding:1px 4px;font-weight:500">{html.escape(str(c))}</th>' for c in col_labels)
    rows = []
    for i, label in enumerate(row_labels):
        colours = [_color(float(v[i, j]), scale) for j in range(v.shape[1])]
        cells = "".join(
            f'<td title="{html.escape(f"{label}, {col_labels[j]}: {float(v[i, j])!r}")}" '
            f'style="background:{colours[j]};color:{ink(colours[j])};padding:1px 4px;text-align:right">'
            f"{_fmt(float(v[i, j]))}</td>" for j in range(v.shape[1]))
        rows.append(f'<tr><th style="padding:1px 4px;font-weight:500;text-align:left">{html.escape(str(label))}'
                    f"</th>{cells}</tr>")
    return (f'<table style="border-collapse:collapse;font-size:12px;margin:4px 0"><thead><tr>'
            f"<th>{html.escape(corner)}</th>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _labels(result: Any, axis: int, n: int) -> list[str]:
    return [result.label(result.axes[axis], i) for i in range(n)]


def values_summary(result: Any, values: Tensor, what: str) -> str:
    """A heatmap table of ``values`` (same axes as the result) or its 10 largest cells."""
    if values.ndim == 0:
        return f"<p>{html.escape(what)}: <b>{_fmt(float(values))}</b></p>"
    if values.ndim <= 2 and max(values.shape) <= MAX_SIDE:
        grid = values if values.ndim == 2 else values[None]
        rows = _labels(result, 0, grid.shape[0]) if values.ndim == 2 else [what]
        cols = _labels(result, values.ndim - 1, grid.shape[1])
        corner = f"{result.axes[0]} \\ {result.axes[1]}" if values.ndim == 2 else result.axes[0]
        return f"<div>{html.escape(what)}:</div>{heat_table(grid, rows, cols, corner=corner)}"
    flat = values.detach().double().flatten().cpu()
    order = torch.nan_to_num(flat.abs(), nan=-1.0).argsort(descending=True)[:10].tolist()
    rows = []
    for i in order:
        index = list(torch.unravel_index(torch.tensor(i), values.shape))
        rows.append([", ".join(f"{a} {result.label(a, int(j))}" for a, j in zip(result.axes, index)), float(flat[i])])
    return f"<div>{html.escape(what)}: the 10 largest |values| of {flat.numel()}</div>" + table_html(["cell", what], rows)


def _generic(result: Any) -> str:
    return values_summary(result, result.values, result.metric)


def _provenance(result: Any) -> str:
    p = result.provenance
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in result.extras.items())
    items = [("model", p.model_id), ("prompt hash", p.prompt_hash), ("seed", p.seed), ("version", p.version),
             ("created", p.created)]
    lines = "".join(f"<li>{html.escape(k)}: {html.escape(str(v))}</li>" for k, v in items if v not in ("", None))
    shown = list(p.interventions[:10])
    ivs = "".join(f"<li><code>{html.escape(d)}</code></li>" for d in shown)
    if len(p.interventions) > len(shown):
        ivs += f"<li>... {len(p.interventions) - len(shown)} more</li>"
    settings = json.dumps(p.settings, default=str)
    if len(settings) > 600:
        settings = settings[:600] + " ..."
    return (f"<details><summary>provenance</summary><ul>{lines}"
            + (f"<li>interventions:<ol>{ivs}</ol></li>" if ivs else "")
            + f"<li>settings: <code>{html.escape(settings)}</code></li>"
            + (f"<li>extras: {html.escape(shapes)}</li>" if shapes else "") + "</ul></details>")


def result_html(result: Any) -> str:
    """The HTML a notebook shows for a Result: a one-line header, a summary, provenance.

    Example:
        >>> import torch
        >>> from tl_interp.results import Provenance, Result
        >>> r = Result(torch.tensor([[1.0, -2.0]]), ("layer", "pos"), "logit diff", Provenance("m"))
        >>> "logit diff" in result_html(r) and "<table" in result_html(r)
        True
    """
    shape = " x ".join(f"{a}={n}" for a, n in zip(result.axes, result.values.shape)) or "scalar"
    head = (f"<div><b>{html.escape(type(result).__name__)}</b>: {html.escape(result.metric)} "
            f"({html.escape(shape)}; model {html.escape(result.provenance.model_id)})</div>")
    body = _SUMMARIES.get(result.kind, _generic)(result)
    return f'<div class="tl-interp-result" {_BOX}>{head}{body}{_provenance(result)}</div>'


def intervention_html(intervention: Any) -> str:
    """The HTML a notebook shows for an Intervention: its hooks in order.

    Example:
        >>> from tl_interp import hooks, site
        >>> "zero-ablate" in intervention_html(hooks.zero_ablate(site("z", 1), heads=[3]))
        True
    """
    if not intervention.hooks:
        return f'<div class="tl-interp-intervention" {_BOX}><b>Intervention</b> (identity: no hooks)</div>'
    items = "".join(f"<li><code>{html.escape(h.description)}</code></li>" for h in intervention.hooks)
    noun = "hook" if len(intervention.hooks) == 1 else "hooks"
    return (f'<div class="tl-interp-intervention" {_BOX}><b>Intervention</b> ({len(intervention.hooks)} '
            f"{noun}, applied in order)<ol>{items}</ol></div>")


def svg_bars(heights: Sequence[float], edges: Sequence[float], *, width: int = 360, height: int = 120,
             x_title: str = "", y_title: str = "count") -> str:
    """A small inline-SVG histogram (bars between ``edges``), readable without JavaScript."""
    top = max(max(heights, default=0), 1e-12)
    n = len(heights)
    bw = (width - 40) / max(n, 1)
    bars = "".join(
        f'<rect x="{40 + i * bw:.1f}" y="{height - 20 - (h / top) * (height - 30):.1f}" width="{max(bw - 1, 1):.1f}" '
        f'height="{(h / top) * (height - 30):.1f}" fill="#2166ac"><title>{_fmt(edges[i])}..{_fmt(edges[i + 1])}: '
        f"{h:g}</title></rect>" for i, h in enumerate(heights))
    return (f'<svg width="{width}" height="{height}" role="img" style="font:10px sans-serif">{bars}'
            f'<text x="40" y="{height - 6}">{_fmt(edges[0])}</text>'
            f'<text x="{width}" y="{height - 6}" text-anchor="end">{_fmt(edges[-1])}</text>'
            f'<text x="{(width + 40) / 2:.0f}" y="{height - 6}" text-anchor="middle">{html.escape(x_title)}</text>'
            f'<text x="2" y="12">{html.escape(y_title)} (max {top:g})</text></svg>')


# -- the studies' summaries ----------------------------------------------------------------
@summary_for("patching")
def _patching(result: Any) -> str:
    base, source = result.extras.get("base"), result.extras.get("source")
    if base is None or source is None:
        return _generic(result)
    line = ""
    if base.numel() == 1 and source.numel() == 1:
        line = (f"<div>base run {_fmt(float(base))}, source run {_fmt(float(source))}; cells show the fraction "
                "of the way from base to source</div>")
    return line + values_summary(result, result.normalized, "recovered")


@summary_for("ablation")
def _ablation(result: Any) -> str:
    if "ci_low" not in result.extras or "ci_high" not in result.extras:
        return _generic(result)
    top = result.top(min(10, result.values.numel()), absolute=False,
                     largest=not result.higher_is_better)  # up to 10, most damaging first
    rows = [[unit, effect, f"[{lo:.3g}, {hi:.3g}]"]
            for unit, effect, lo, hi in zip(top.labels, top.values, top.columns["ci_low"], top.columns["ci_high"])]
    base = result.extras.get("base")
    line = f"<div>unablated metric {_fmt(float(base))}</div>" if base is not None and base.numel() == 1 else ""
    return (line + values_summary(result, result.values, "change when ablated")
            + "<div>most damaging first:</div>" + table_html(["unit", "effect", "95% CI"], rows))


@summary_for("steering")
def _steering(result: Any) -> str:
    if "accuracy_ci_low" not in result.extras or "scales" not in result.meta:
        return _generic(result)
    frame = result.table("accuracy")
    mean = torch.nan_to_num(result.metric_values("accuracy").double(), nan=0.0).mean(-1)  # (vector, scale)
    n_mult = mean.shape[1]
    # unsteered, then each vector at its best scale (mean accuracy over tasks): a summary
    keep = [0] + [1 + i * n_mult + int(mean[i].argmax()) for i in range(mean.shape[0])]
    return (f"<div>accuracy [95% CI] by task: unsteered, and each vector at its best of {n_mult} scales "
            "(<code>.table()</code> has every row):</div>"
            + table_html(list(frame.columns), frame.iloc[keep].values.tolist()))


@summary_for("lens")
def _lens(result: Any) -> str:
    from tl_interp.viz.lens import lens_html

    if result.values.ndim != 3 or not {"mask", "position", "tokens", "top_tokens", "top_probs"} <= set(result.extras):
        return _generic(result)
    return lens_html(result)


@summary_for("dla")
def _dla(result: Any) -> str:
    from tl_interp.viz.lens import dla_html

    if result.values.ndim != 2 or not {"constant", "logit", "renormalised", "centring"} <= set(result.extras):
        return _generic(result)
    return dla_html(result)
