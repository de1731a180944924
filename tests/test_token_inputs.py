"""One token check for every entry point that takes token ids (issue 19, item 7).

Negative ids index the embedding from the end (a silent wrong answer), ids >= d_vocab fail with
a raw IndexError deep inside TransformerLens, float or wrongly shaped ids fail somewhere else:
every entry point refuses each with the same ``InputError`` before any forward pass.
"""

from collections.abc import Callable
from typing import Any

import pytest
import torch

import tl_interp as ti
from tests.conftest import ToyMLP
from tests.prompt_pair import CLEAN, ordinal_metric
from tests.reliability import no_forward, ordinal, tiny
from tl_interp.engine.inputs import as_batch
from tl_interp.errors import InputError, TlInterpWarning, TypeCheckError, UnsupportedError
from tl_interp.models import Tokenized

SITE = "blocks.0.hook_resid_post"
BAD = {
    "negative": (torch.tensor([[1, -1, 3]]), r"token id -1 at row 0, position 1 is outside the vocabulary \(d_vocab=61\) "
                                              r"\(a negative id would index the embedding from the end\)"),
    ">= d_vocab": (torch.tensor([[1, 2, 61]]), r"token id 61 at row 0, position 2 is outside the vocabulary "
                                               r"\(d_vocab=61\); give ids in 0..60"),
    "float": (torch.tensor([[1.0, 2.0, 3.0]]), "token ids must be an integer tensor, not torch.float32"),
    "no positions": (torch.zeros(1, 0, dtype=torch.long), r"at least one row and one position; got shape \(1, 0\)"),
    "3-D ids": (torch.ones(1, 1, 3, dtype=torch.long), r"got shape \(1, 1, 3\)"),
}


def _vector() -> Any:
    return ti.steering.SteeringVector(torch.ones(32), SITE)


def _applied(model: Any, tokens: torch.Tensor) -> Any:
    with ti.Intervention.identity().applied(model):
        return model(tokens)


def _generate(model: Any, tokens: torch.Tensor) -> Any:
    with ti.hooks.zero_ablate(ti.site("mlp_out", 0)).applied(model):
        return model.generate(tokens, max_new_tokens=2, verbose=False, do_sample=False)


ENTRY_POINTS: dict[str, Callable[[Any, torch.Tensor], Any]] = {
    "Intervention.run": lambda m, t: ti.hooks.zero_ablate(ti.site("mlp_out", 0)).run(m, t),
    "applied + model call": _applied,
    "applied + model.generate": _generate,
    "cache().collect": lambda m, t: ti.hooks.cache(SITE).collect(m, t),
    "collect": lambda m, t: ti.collect(m, t, SITE, progress=False),
    "patching.sweep": lambda m, t: ti.patching.sweep(m, t, t, ti.metrics.logit_diff(1, 2), progress=False),
    "ablation.scan": lambda m, t: ti.ablation.scan(m, t, lambda x: x[:, -1, 1].mean(), progress=False),
    "steering.next_token_logits": lambda m, t: ti.steering.next_token_logits(m, t, _vector(), [1.0]),
    "steering.generate": lambda m, t: ti.steering.generate(m, t, _vector(), [1.0], max_new_tokens=2),
    "steering.read_activations": lambda m, t: ti.steering.read_activations(m, t, SITE, progress=False),
    "steering.contrast_vector": lambda m, t: ti.steering.contrast_vector(m, t, t, SITE, progress=False),
}


@pytest.mark.parametrize("bad", list(BAD))
@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_every_entry_point_refuses_bad_token_ids_before_any_forward_pass(entry: str, bad: str) -> None:
    model = tiny()
    tokens, message = BAD[bad]
    with no_forward(model), pytest.raises(InputError, match=message):
        ENTRY_POINTS[entry](model, tokens)
    assert all(not p.fwd_hooks for p in model.hook_dict.values())  # nothing left attached


def test_a_negative_id_used_to_read_the_embedding_from_the_end() -> None:
    # the silent wrong answer: TransformerLens indexes W_E[-1] for id -1, i.e. the last token's row
    model = tiny()
    iv = ti.Intervention.identity()
    with pytest.raises(InputError, match="token id -1"):
        iv.run(model, torch.tensor([[1, -1]]))
    assert torch.equal(model(torch.tensor([[1, -1]])), model(torch.tensor([[1, 60]])))  # what it would have read


def test_good_ids_and_residual_inputs_still_run() -> None:
    model = tiny()
    tokens = torch.tensor([[0, 5, 60]])
    iv = ti.Intervention.identity()
    assert torch.equal(iv.run(model, tokens), model(tokens))
    assert torch.equal(iv.run(model, tokens[0]), model(tokens[0]))  # (pos,) ids
    assert torch.equal(iv.run(model, tokens.int()), model(tokens.int()))
    resid = model.embed(tokens) + model.pos_embed(tokens)
    with iv.applied(model):  # a float residual from start_at_layer is not token ids
        out = model(resid, start_at_layer=0)
    assert torch.equal(out, model(resid, start_at_layer=0))


@pytest.mark.parametrize("token, message", [(-3, r"token id -3 at row 0, position 1 .*from the end"),
                                            (89, r"token id 89 at row 0, position 1 .*\(d_vocab=89\); give ids in 0..88")])
def test_sae_evaluation_refuses_ids_outside_the_vocabulary_before_any_forward_pass(token: int, message: str) -> None:
    # a sibling: the SAE card figures run the model on held-out token tensors directly
    from tl_interp.ablation.saes import site_activations, splice_losses

    model, sae = ti.models.load("ordinal-4l"), ti.models.load_sae("ordinal-4l-res-l2")
    tokens, mask = torch.tensor([[1, token, 5]]), torch.ones(1, 3, dtype=torch.long)
    with no_forward(model), pytest.raises(InputError, match="site_activations: " + message):
        site_activations(model, 2, tokens, mask)
    with no_forward(model), pytest.raises(InputError, match="splice_losses: " + message):
        splice_losses(sae, model, tokens, mask)


# -- issue 10's reliability probes (formerly tests/test_reliability_inputs.py), beside the module they test --
TOKENS = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))


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
