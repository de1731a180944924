"""Metrics of a model's output: logit difference, answer probability, loss, KL, accuracy, ...

A ``Metric`` is a function of logits ``(batch, pos, d_vocab) -> scalar``, exactly as
TransformerLens's patching functions take it, so one metric object serves both libraries.
It also says *where it reads* -- by default each prompt's last real token (``"last"``) --
which lets studies compute logits only at those positions, and it evaluates per prompt and
over stacked variants (leading axes before ``batch``) without a Python loop.

Studies bind a metric to their batch (``metric.at(batch)``): ``"last"`` becomes each row's
last real token, and a literal position that is padding in some row is refused, so a padded
batch gives the mean of the per-prompt results. Outside a study, give the batch with the
logits, ``metric(logits, batch)`` (or bind once: ``metric.at(batch)``); logits alone do not say
where each row ends, so an unbound ``"last"`` metric reads them only when there is one row
(position -1) and refuses more rows rather than read a right-padded row's padding. With a
batch you know is unpadded, ``positions=-1`` says so.

Answers are one token id per prompt (an int for all, or a ``(batch,)`` tensor); an answer of
``-1`` means "no expected answer" and scores NaN for that prompt. ``MetricSet`` evaluates
several metrics that read the same positions from one set of logits.

Modules: ``_metric.py`` (the ``Metric`` protocol, its ``Reader`` and binding to a batch),
``_set.py`` (``MetricSet``), ``_bind.py`` (``is_metric`` / ``bind`` for studies),
``_constructors.py`` (the metrics).
"""

from tl_interp.metrics._bind import bind, is_metric
from tl_interp.metrics._constructors import (accuracy, answer_logprob, answer_prob, best_of, changed, in_set, kl_div,
                                             logit_diff, loss, top_token)
from tl_interp.metrics._metric import Answers, Metric, Reader  # noqa: F401 - Answers, Reader: the type aliases
from tl_interp.metrics._set import MetricSet

__all__ = ["Metric", "MetricSet", "logit_diff", "answer_logprob", "answer_prob", "accuracy", "kl_div", "loss",
           "top_token", "changed", "in_set", "best_of", "bind", "is_metric"]
