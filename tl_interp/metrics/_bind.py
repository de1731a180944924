"""Binding a study's metric to its batch: tl_interp metrics learn where each row ends
(``Metric.at``); a plain function must not see padding, so a padded batch refuses it."""

from typing import Any

from tl_interp._checks import checked
from tl_interp.errors import InputError
from tl_interp.metrics._metric import Metric
from tl_interp.metrics._set import MetricSet

__all__ = ["is_metric", "bind"]


@checked
def is_metric(metric: Any) -> bool:
    """Whether ``metric`` gives per-prompt values (a ``Metric`` or ``MetricSet``)."""
    return isinstance(metric, (Metric, MetricSet))


@checked
def bind(metric: Any, batch: Any) -> Any:
    """A metric ready to read ``batch``: tl_interp metrics are bound (``.at``); a plain
    function must not see padding, because nothing tells it where each prompt ends."""
    if is_metric(metric):
        return metric.at(batch)  # type: ignore[union-attr]
    if batch.padded:
        raise InputError("a plain metric function sees the logits of the padded batch and cannot know where each "
                         "prompt ends; use a tl_interp.metrics metric (they read each prompt's last real token), "
                         "or give prompts of equal token length")
    return metric
