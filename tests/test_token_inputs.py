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
from tests.reliability import no_forward, tiny
from tl_interp.errors import InputError

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
