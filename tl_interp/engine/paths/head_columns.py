"""Unembed only the vocabulary entries the metric reads: with the read-only head on, a metric
that reads a few entries -- a ``ti.metrics`` metric naming them (``Metric.narrowed``: a logit
difference's answers), or a plain function whose trace names them (``engine.reads``, every
later call checked against them) -- gets ``compat.head_columns`` of those entries alone (final
norm, those columns of the unembedding, soft cap), not the whole vocabulary: on SmolLM2, 8 of
49,152 columns."""

from typing import Any

from torch import Tensor

from tl_interp.metrics import Metric

__all__ = ["reason", "narrowed"]


def reason(read_reason: str | None, staged: bool) -> str | None:
    """Why every vocabulary entry must be computed whatever the metric reads, or None."""
    if read_reason is not None:
        return "needs the read-only head"
    if staged:
        return "a staged metric (its second stage may read other entries)"
    return None


def narrowed(metric: Any) -> tuple[Tensor, Any] | None:
    """The entries a ``ti.metrics`` metric reads and the same metric scoring those columns alone,
    or None (a plain function is traced instead; a ``MetricSet`` reads every entry)."""
    return metric.narrowed() if isinstance(metric, Metric) else None
