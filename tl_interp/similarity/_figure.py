"""The figure of a ``SimilarityResult``: each score against the histogram of its null (plotly)."""

from typing import Any

__all__ = ["null_figure"]


def null_figure(result: Any, *, title: str | None = None) -> Any:
    """One panel per metric: the null histogram, the observed score as a vertical line, p in the title.

    Example:
        >>> import torch
        >>> from tl_interp.similarity import compare
        >>> X = torch.randn(20, 3, generator=torch.Generator().manual_seed(0))
        >>> fig = compare(X, X, measures=("cka",), n_permutations=20, n_boot=5).figure()
        >>> fig.data[0].type
        'histogram'
    """
    from plotly.subplots import make_subplots

    from tl_interp.viz._plotly import savable

    names = result.labels["metric"]
    p = result.extras["p_value"].tolist()
    fig = savable(make_subplots(rows=1, cols=len(names), subplot_titles=[f"{m} (p={pv:.3g})" for m, pv in zip(names, p)]))
    for col, name in enumerate(names, start=1):
        fig.add_histogram(x=result.extras["null"][col - 1].tolist(), nbinsx=40, marker_color="#9aa5b1",
                          name=f"{name} null", showlegend=False, row=1, col=col)
        fig.add_vline(x=float(result.values[col - 1]), line_color="#c0392b", line_width=3, row=1, col=col)
    fig.update_layout(title=title or f"similarity vs random pairing: {result.provenance.model_id}",
                      height=320, width=max(420, 260 * len(names)), bargap=0.05)
    return fig
