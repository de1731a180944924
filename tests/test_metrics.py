"""Metrics read each prompt's last real token, never a pad, and refuse logits they cannot read."""

from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.prompt_pair import CLEAN, CORRUPTED, ids, ordinal_metric
from tests.reliability import no_forward, ordinal, tiny
from tl_interp.errors import InputError, SelectionError


# -- issue 10's reliability probes (formerly tests/test_reliability_inputs.py) --
TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))


def test_metrics_read_each_prompts_last_real_token_by_default() -> None:
    # probe 2: "every metric defaults to position -1" -- now to each prompt's last real token
    model = ordinal()
    batch = ti.models.adapt(model).tokenize(CLEAN)
    logits = model(batch.tokens, attention_mask=batch.attention_mask)
    metric = ordinal_metric().at(batch)
    answers, wrong = ids(model, ["three", "april"]), ids(model, ["four", "may"])
    expected = torch.stack([logits[i, n - 1, answers[i]] - logits[i, n - 1, wrong[i]] for i, n in enumerate([5, 7])])
    assert_close(metric.per_prompt(logits), expected, rtol=0, atol=0)


def test_a_metric_outside_a_study_takes_the_batch_and_never_reads_a_pad() -> None:
    # issue 19 item 5: metric(model(batch.tokens, attention_mask=...)) read row 0's padding (2.43, not 5.58)
    model = ordinal()
    batch = ti.models.adapt(model).tokenize(CLEAN)  # 5 and 7 tokens: row 0 right-padded
    assert batch.padded
    logits = model(batch.tokens, attention_mask=batch.attention_mask)
    metric = ordinal_metric()
    alone = torch.stack([ordinal_metric(slice(i, i + 1))(model(ti.models.adapt(model).tokenize(CLEAN[i]).tokens))
                         for i in range(2)])  # each prompt alone, unpadded: the reference
    with pytest.raises(InputError, match=r"metric logit_diff reads each prompt's last real token, but it was given "
                                         r"logits of 2 prompts and no batch.*metric\(logits, batch\)"):
        metric(logits)
    assert_close(metric(logits, batch), alone.mean(), rtol=1e-5, atol=1e-5)
    assert_close(metric.at(batch)(logits), alone.mean(), rtol=1e-5, atol=1e-5)
    assert_close(metric.per_prompt(logits, batch), alone, rtol=1e-5, atol=1e-5)
    both = ti.metrics.MetricSet({"d": metric, "p": ti.metrics.answer_prob(ids(model, ["three", "april"]))})
    assert_close(both.per_prompt(logits, batch)["d"], alone, rtol=1e-5, atol=1e-5)
    with pytest.raises(InputError, match="cannot know where each row ends"):
        both.per_prompt(logits)
    # one row has no padding to read; an explicit position is the caller's claim (checked against a batch)
    assert_close(ordinal_metric(slice(1, 2))(logits[1:]), alone[1], rtol=1e-5, atol=1e-5)
    with pytest.raises(SelectionError, match=r"padding in rows \[0\]"):
        ti.metrics.logit_diff(1, 2, positions=-1)(logits, batch)


def test_a_metric_reading_a_literal_position_that_is_padding_is_refused() -> None:
    # probe 2: "or refuse with an error that says how"
    model = ordinal()
    metric = ti.metrics.logit_diff(ids(model, ["three", "april"]), ids(model, ["four", "may"]), positions=-1)
    with no_forward(model), pytest.raises(SelectionError, match=r"padding in rows \[0\]; use positions='last'"):
        ti.patching.sweep(model, CLEAN, CORRUPTED, metric, progress=False)


@pytest.mark.parametrize("study", ["sweep", "scan"])
def test_a_plain_metric_function_on_a_padded_batch_is_refused(study: str) -> None:
    # probe 2: a plain function cannot know where each prompt ends
    model = ordinal()

    def metric(logits: torch.Tensor) -> torch.Tensor:
        return logits[:, -1, 8].mean()

    run = (lambda: ti.patching.sweep(model, CLEAN, CORRUPTED, metric, progress=False)) if study == "sweep" else (
        lambda: ti.ablation.scan(model, CLEAN, metric, progress=False))
    message = "plain metric function sees the logits of the padded batch"
    with no_forward(model), pytest.raises(InputError, match=message):
        run()


# -- metrics that cannot read these logits --------------------------------------------------
@pytest.mark.parametrize("metric, error, message", [
    (lambda: ti.metrics.logit_diff(100, 2), InputError, r"token id 100 is outside the vocabulary \(d_vocab=61\)"),
    (lambda: ti.metrics.logit_diff(-2, 2), InputError, r"token id -2 is outside.*-1 means 'no expected answer'"),
    (lambda: ti.metrics.accuracy(99), InputError, "token id 99 is outside"),  # was: never right, silently 0
    (lambda: ti.metrics.in_set(torch.tensor([1, 99])), InputError, "in_set tokens: token id 99"),
    (lambda: ti.metrics.best_of(torch.tensor([1, 99]), 1), InputError, "best_of candidates: token id 99"),
    (lambda: ti.metrics.changed(torch.tensor([-1, 3])), InputError, "changed reference: token id -1"),
    (lambda: ti.metrics.logit_diff(torch.tensor([1, 2, 3]), 2), InputError, "3 answers for a batch of 2 prompts"),
    (lambda: ti.metrics.kl_div(torch.randn(3, 61)), InputError, r"reference logits have shape \(3, 61\)"),
    (lambda: ti.metrics.loss(torch.randint(0, 61, (2, 4))), InputError, r"loss: the tokens have shape \(2, 4\)"),
    (lambda: ti.metrics.logit_diff(1, 2, positions=9), SelectionError, r"positions \[9, 9\] are out of range for 5"),
    (lambda: (lambda x: x[:, -1, 0]), InputError, r"must return a scalar .* it returned \(2,\)"),
    (lambda: (lambda x: 1.0), InputError, "must return a scalar .* it returned float"),
])
def test_a_metric_that_cannot_read_these_logits_is_refused_before_any_forward_pass(metric: Any, error: type,
                                                                                 message: str) -> None:
    model = tiny()
    with no_forward(model), pytest.raises(error, match=message):
        ti.patching.sweep(model, TOKENS, TOKENS.flip(0), metric(), progress=False)


def test_an_answer_of_minus_one_means_no_answer_and_scores_nan() -> None:
    # own probe, correct behaviour: -1 is the documented "no expected answer"
    values = ti.metrics.logit_diff(torch.tensor([-1, 3]), 2, positions=-1).per_prompt(torch.randn(2, 4, 5))
    assert torch.isnan(values[0]) and not torch.isnan(values[1])


def test_metric_sets_must_read_one_position() -> None:
    with pytest.raises(InputError, match="must read the same positions"):
        ti.metrics.MetricSet({"a": ti.metrics.accuracy(1), "b": ti.metrics.accuracy(1, positions=0)})


def test_a_per_row_metric_position_on_padding_is_refused() -> None:
    # own probe: a (batch,) reader tensor that points at a pad
    model = ordinal()
    metric = ti.metrics.logit_diff(ids(model, ["three", "april"]), ids(model, ["four", "may"]),
                                   positions=torch.tensor([6, 6]))
    with no_forward(model), pytest.raises(SelectionError, match=r"padding in rows \[0\]"):
        ti.patching.sweep(model, CLEAN, CORRUPTED, metric, progress=False)


def test_a_metric_reading_one_position_per_row_needs_one_per_prompt() -> None:
    # own probe: a reader tensor of the wrong length
    metric = ti.metrics.logit_diff(1, 2, positions=torch.tensor([1, 2, 3]))
    with no_forward(tiny()), pytest.raises(ti.ShapeError, match="reads 3 positions for a batch of 2 prompts"):
        ti.patching.sweep(tiny(), TOKENS, TOKENS.flip(0), metric, progress=False)
