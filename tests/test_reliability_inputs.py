"""Reliability probes (issue 10): inputs and metrics.

Padded batches must give the mean of the per-prompt results whatever the user passes, or be
refused with the way to do it; inputs a forward pass would get wrong (or fail on deep inside
TransformerLens) are refused with an ``InputError`` before any forward pass.
"""

from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import ToyMLP
from tests.reliability import no_forward, ordinal, tiny
from tl_interp.engine.inputs import as_batch
from tl_interp.errors import (InputError, OptionError, SelectionError, TlInterpWarning, TypeCheckError,
                              UnsupportedError)
from tl_interp.models import Tokenized

TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))
CLEAN = ["one , two ,", "january , february , march ,"]  # 5 and 7 tokens with BOS: right-padded
CORRUPTED = ["two , one ,", "february , january , april ,"]  # the same lengths, row by row


def ids(model: Any, words: list[str]) -> torch.Tensor:
    return torch.tensor([model.to_single_token(w) for w in words])


def ordinal_metric(rows: slice = slice(None)) -> Any:
    model = ordinal()
    return ti.metrics.logit_diff(ids(model, ["three", "april"])[rows], ids(model, ["four", "may"])[rows])


# -- issue item 2: padded prompts and metrics reading position -1 ----------------------------
def test_a_padded_sweep_equals_the_mean_of_per_prompt_sweeps() -> None:
    # probe 2: lists of strings of different lengths are right-padded; the metric must not read a pad
    model = ordinal()
    padded = ti.patching.sweep(model, CLEAN, CORRUPTED, ordinal_metric(), progress=False)
    per_prompt = [ti.patching.sweep(model, CLEAN[i], CORRUPTED[i], ordinal_metric(slice(i, i + 1)), progress=False)
                  for i in range(2)]
    width = padded.values.shape[1]
    expected = torch.stack([torch.cat([r.values, r.base.expand(r.values.shape[0], width - r.values.shape[1])], 1)
                            for r in per_prompt]).mean(0)  # patching a pad after a row's end changes nothing
    assert_close(padded.values, expected, rtol=1e-5, atol=1e-5)
    assert_close(padded.base, torch.stack([r.base for r in per_prompt]).mean(), rtol=1e-5, atol=1e-5)


def test_a_padded_scan_equals_the_mean_of_per_prompt_scans() -> None:
    # probe 2 for ablation scans (per-prompt metric, heads)
    model = ordinal()
    answers, wrong = ids(model, ["three", "april"]), ids(model, ["four", "may"])
    padded = ti.ablation.scan(model, CLEAN, ti.metrics.logit_diff(answers, wrong), n_boot=10, progress=False)
    singles = [ti.ablation.scan(model, [CLEAN[i]] * 2, ti.metrics.logit_diff(int(answers[i]), int(wrong[i])),
                                n_boot=10, progress=False).values for i in range(2)]  # two copies: no padding
    assert_close(padded.values, torch.stack(singles).mean(0), rtol=1e-5, atol=1e-5)


def test_a_left_padded_token_batch_scans_like_its_rows_alone() -> None:
    # own probe: left padding (TransformerLens shifts positions by the mask)
    model = ordinal()
    rows = [model.to_tokens(p)[0] for p in CLEAN]
    width = max(len(r) for r in rows)
    tokens = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), torch.ones(len(r), dtype=torch.long)])
                        for r in rows])
    answers, wrong = ids(model, ["three", "april"]), ids(model, ["four", "may"])
    padded = ti.ablation.scan(model, tokens, ti.metrics.logit_diff(answers, wrong), attention_mask=mask, n_boot=10,
                              progress=False)
    singles = [ti.ablation.scan(model, rows[i][None].repeat(2, 1),
                                ti.metrics.logit_diff(int(answers[i]), int(wrong[i])), n_boot=10, progress=False).values
               for i in range(2)]
    assert_close(padded.values, torch.stack(singles).mean(0), rtol=1e-4, atol=1e-4)


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


# -- issue item 3: longer than the context -------------------------------------------------
def test_prompts_longer_than_the_context_are_refused_not_truncated() -> None:
    # probe 3: tokenisation used to truncate silently
    model = ordinal()
    long = " ".join(["one ,"] * 20)  # 41 tokens with BOS; n_ctx is 32
    message = r"41 tokens \(prompts \[1\]\) exceed the model's context of n_ctx=32"
    with no_forward(model), pytest.raises(InputError, match=message):
        ti.ablation.scan(model, ["one , two ,", long], ordinal_metric(), progress=False)


@pytest.mark.parametrize("call", ["sweep", "scan", "run"])
def test_token_tensors_longer_than_the_context_are_refused_before_any_forward_pass(call: str) -> None:
    # probe 3: "token tensors longer than n_ctx ... fail inside TransformerLens"
    model = tiny()
    tokens = torch.randint(1, 61, (1, 40))
    metric = ti.metrics.logit_diff(1, 2)
    run = {"sweep": lambda: ti.patching.sweep(model, tokens, tokens, metric, progress=False),
           "scan": lambda: ti.ablation.scan(model, tokens, lambda x: x[:, -1, 1].mean(), progress=False),
           "run": lambda: ti.hooks.zero_ablate(ti.site("z", 0), heads=1).run(model, tokens)}[call]
    with no_forward(model), pytest.raises(InputError, match="40.* n_ctx=32"):
        run()


# -- unclear errors: malformed tokens and masks ----------------------------------------------
@pytest.mark.parametrize("tokens, kwargs, message", [
    (TOKENS + 60, {}, r"token id \d+ at row 0, position 0 is outside the vocabulary \(d_vocab=61\)"),  # ids >= d_vocab
    (TOKENS - 10, {}, "is outside the vocabulary"),  # own probe: negative ids
    (TOKENS.float(), {}, "must be an integer tensor, not torch.float32"),  # float tokens
    (TOKENS.bool(), {}, "must be an integer tensor, not torch.bool"),  # own probe
    (torch.zeros(1, 0, dtype=torch.long), {}, r"at least one row and one position; got shape \(1, 0\)"),  # (1, 0)
    (torch.zeros(0, 5, dtype=torch.long), {}, r"got shape \(0, 5\)"),  # own probe: no rows
    (TOKENS[None], {}, r"got shape \(1, 2, 5\)"),  # own probe: 3-D tokens
    (TOKENS, {"attention_mask": torch.ones(2, 4)}, r"attention_mask has shape \(2, 4\), the tokens have \(2, 5\)"),
    (TOKENS, {"attention_mask": torch.ones(2, 5) * 0.5}, "0 \\(padding\\) and 1 \\(real token\\) only"),
    (TOKENS, {"attention_mask": torch.tensor([[1, 0, 1, 1, 1], [1] * 5])}, r"rows \[0\] have padding between real"),
    (TOKENS, {"attention_mask": torch.tensor([[0] * 5, [1] * 5])}, r"rows \[0\] of the attention mask have no real"),
])
def test_malformed_token_inputs_are_refused_before_any_forward_pass(tokens: torch.Tensor, kwargs: dict[str, Any],
                                                                    message: str) -> None:
    model = tiny()
    with no_forward(model), pytest.raises(InputError, match=message):
        ti.patching.sweep(model, tokens, tokens, ti.metrics.logit_diff(1, 2), progress=False, **kwargs)


@pytest.mark.parametrize("inputs, kwargs, error, message", [
    ([], {}, InputError, "the list of prompts is empty"),  # own probe
    ([1, 2], {}, TypeCheckError, "inputs is \\[1, 2\\]; it takes str \\| Sequence\\[str\\]"),  # own probe
    (CLEAN, {"attention_mask": torch.ones(2, 7)}, InputError, "attention_mask goes with token ids"),  # own probe
    (Tokenized(torch.tensor([[1, 6, 4]]), torch.tensor([[1, 1, 1]]), torch.tensor([1]), [["a", "b", "c"]]), {},
     InputError, "last_index disagrees with its attention mask"),  # own probe: an inconsistent Tokenized
])
def test_malformed_prompt_inputs_are_refused_before_any_forward_pass(inputs: Any, kwargs: dict[str, Any],
                                                                     error: type, message: str) -> None:
    model = ordinal()
    with no_forward(model), pytest.raises(error, match=message):
        ti.ablation.scan(model, inputs, lambda x: x[:, -1, 8].mean(), progress=False, **kwargs)


def test_words_outside_a_word_level_vocabulary_are_flagged() -> None:
    # own probe: the model would read <unk> for "zebra"
    model = ordinal()
    message = r"prompt 1 \('zebra , two ,'\) has 1 word\(s\) outside the model's vocabulary"
    with pytest.warns(TlInterpWarning, match=message):
        as_batch(model, ["one , two ,", "zebra , two ,"])


@pytest.mark.parametrize("study", ["sweep", "scan"])
def test_studies_on_a_custom_module_are_refused_before_any_forward_pass(study: str) -> None:
    # unclear error: sweep/scan on a custom HookedRootModule (AttributeError on n_heads)
    model = ToyMLP()
    pairs = torch.randint(0, 12, (3, 2))
    run = (lambda: ti.patching.sweep(model, pairs, pairs, lambda x: x.sum(), progress=False)) if study == "sweep" else (
        lambda: ti.ablation.scan(model, pairs, lambda x: x.sum(), progress=False))
    message = "ToyMLP is a custom HookedRootModule.*Intervention.run"
    with no_forward(model), pytest.raises(UnsupportedError, match=message):
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


# -- options of the engine ---------------------------------------------------------------------
def test_a_zero_memory_budget_is_refused_before_any_forward_pass() -> None:
    # unclear error: prompts_per_pass=0 (now: the memory budget of one stacked pass)
    model = tiny()
    with no_forward(model), pytest.raises(OptionError, match="memory_mb must be positive, got 0.0"):
        ti.patching.sweep(model, TOKENS, TOKENS.flip(0), ti.metrics.logit_diff(1, 2), memory_mb=0.0, progress=False)


def test_the_old_prompts_per_pass_option_is_refused_by_name() -> None:
    # unclear error: prompts_per_pass=0 raised a raw range() error after all passes; the option is gone
    with no_forward(tiny()), pytest.raises(TypeError, match="prompts_per_pass"):
        ti.ablation.scan(tiny(), TOKENS, ti.metrics.logit_diff(1, 2), prompts_per_pass=0, progress=False)


def test_an_integer_memory_budget_is_accepted() -> None:
    # own probe: memory_mb=512 (an int where a float is declared)
    result = ti.patching.sweep(tiny(), TOKENS, TOKENS.flip(0), ti.metrics.logit_diff(1, 2), memory_mb=512,
                               progress=False)
    assert result.values.shape == (2, 5)


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


# -- issue 19, unclear errors: a device this torch cannot use --------------------------------
_NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch without a usable CUDA device")


@_NO_CUDA
@pytest.mark.parametrize("call", ["collect", "cache", "load", "load_sae"])
@pytest.mark.parametrize("device", ["cuda", "cuda:0", torch.device("cuda")])
def test_a_cuda_device_on_a_cpu_only_torch_is_a_typed_error_before_any_forward_pass(call: str, device: Any) -> None:
    # was: AssertionError "Torch not compiled with CUDA enabled" after the forward passes
    if call.startswith("load") and not isinstance(device, str):
        pytest.skip("the loaders take device names (str)")
    model = tiny()
    run = {"collect": lambda: ti.collect(model, TOKENS, "blocks.0.hook_resid_post", device=device, progress=False),
           "cache": lambda: ti.hooks.cache("blocks.0.hook_resid_post", device=device),
           "load": lambda: ti.models.load("induction-2l", device=device),
           "load_sae": lambda: ti.models.load_sae("ordinal-4l-res-l2", device=device)}[call]
    message = rf"device={device!r}".replace("(", r"\(").replace(")", r"\)") + \
        r" but (this torch build has no CUDA|no CUDA GPU is visible).*use device='cpu'"
    with no_forward(model), pytest.raises(UnsupportedError, match=message):
        run()


@pytest.mark.parametrize("device", ["cdua", "gpu", 3.5])
def test_a_device_that_is_not_a_device_is_named_with_the_choices(device: Any) -> None:
    model = tiny()
    with no_forward(model), pytest.raises((OptionError, TypeCheckError), match=r"device"):
        ti.collect(model, TOKENS, "blocks.0.hook_resid_post", device=device, progress=False)
