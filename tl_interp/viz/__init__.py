"""Pictures of models and results: circuitsvis views, result tables, SAE feature cards, reports.

- views (circuitsvis, offline): ``attention``, ``tokens``, ``top_activations``, ``predictions``; each
  returns a ``View`` that displays itself in Jupyter / VS Code and goes into a ``Report``;
- ``feature_card`` / ``feature_page``: SAE features over a prompt set;
- ``circuit_html`` / ``curve_figure``: a circuit as an offline SVG graph, a faithfulness curve;
- ``Report``: one self-contained offline HTML page, each JavaScript bundle inlined once;
- every Result and Intervention displays itself in a notebook (``tl_interp.viz.html``);
  ``show(obj)`` displays one from a cell that also runs as a plain script.

Every picture saves itself: ``view.save(path)``, ``card.save(path)``, ``fig.save(path)`` on
every plotly figure tl_interp returns, ``report.save(path)``: ``.html`` offline always,
``.png`` / ``.pdf`` (and ``.svg`` for figures) through a local headless Chromium (``_save``).
Figures take ``value_scale="symlog"``; diverging heatmaps are white where nothing changed.

Nothing here touches the network. Plotting libraries are imported lazily.
"""

from tl_interp.viz._circuitsvis import View, reset_notebook
from tl_interp.viz._show import show
from tl_interp.viz.circuit import circuit_html, curve_figure
from tl_interp.viz.feature_card import Context, FeatureCard, feature_card, feature_page
from tl_interp.viz.report import Report
from tl_interp.viz.views import attention, predictions, tokens, top_activations, topk

__all__ = ["attention", "tokens", "top_activations", "topk", "predictions", "feature_card", "feature_page", "FeatureCard",
           "Context", "View", "Report", "reset_notebook", "show",
           "circuit_html", "curve_figure"]
