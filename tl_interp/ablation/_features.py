"""SAE features over a prompt set: where they fire, what their decoders write, what ablating them costs.

The computations behind a feature card (``viz.feature_card``; after Anthropic's "Towards
Monosemanticity" feature browser and sae_vis):

- ``feature_activations``: the SAE's features at every position it reads (its
  ``seqpos_slice``) of every real token, from one clean forward pass, with the model's own
  top token at each prompt's last real token (the default answer);
- ``decoder_logits``: the tokens a feature's decoder direction promotes and suppresses,
  ``W_dec[feature] @ W_U``, with ``W_U`` as TransformerLens's processing leaves it
  (``ti.weights.fold``: ``ln_final``'s gain folded in, centred), as sae_vis reads it;
- ``feature_ablation``: the answer's probability at each prompt's last token with each
  feature ablated through ``hooks.sae_splice`` (error term kept, so only that feature
  changes), every feature a cell of one engine plan (many per stacked pass, from the SAE's
  layer on, within ``memory_mb``, on any executor), with 95% bootstrap intervals over prompts.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from tl_interp import hooks, metrics
from tl_interp._checks import checked, reordered
from tl_interp._tokens import single_token
from tl_interp.ablation._result import AblationResult
from tl_interp.engine.executors import Executor, Plan, execute
from tl_interp.engine.inputs import Inputs, as_batch
from tl_interp.engine.run import EngineOptions
from tl_interp.errors import InputError, OptionError, SelectionError
from tl_interp.compat.sae import sae_site
from tl_interp.hooks._sae import sae_first
from tl_interp.models._adapter import Tokenized, adapt
from tl_interp.models.saes import splice_positions
from tl_interp.results import Provenance, prompt_hash
from tl_interp.sites import d_vocab_out
from tl_interp.stats import bootstrap_mean_ci

__all__ = ["FeatureActivations", "feature_activations", "decoder_logits", "feature_ablation", "check_feature",
           "prompt_answers", "feature_ablation_with_answers"]

Answers = Sequence[str] | Tensor | None


@dataclass(frozen=True)
class FeatureActivations:
    """Every feature of an SAE at every position of a batch.

    Attributes:
        batch: the checked prompts.
        hook_name: the SAE's hook point.
        features: ``(batch, pos, d_sae)`` float64 on CPU, zero where the SAE does not read.
        valid: ``(batch, pos)`` bool, real tokens the SAE reads.
        top_tokens: ``(batch,)`` the clean model's top token at each prompt's last real token.
    """

    batch: Tokenized
    hook_name: str
    features: Tensor
    valid: Tensor
    top_tokens: Tensor


def check_feature(sae: Any, feature: int) -> None:
    """A ``SelectionError`` unless ``0 <= feature < d_sae``."""
    d_sae = int(sae.cfg.d_sae)
    if isinstance(feature, bool) or not 0 <= feature < d_sae:
        raise SelectionError(f"feature {feature} is out of range: the SAE at {sae_site(sae)} has "
                             f"d_sae={d_sae} features (0..{d_sae - 1})")


@torch.no_grad()
def feature_activations(sae: Any, model: Any, inputs: Inputs) -> FeatureActivations:
    """The SAE's features over ``inputs`` (see ``FeatureActivations``), from one clean forward pass.

    Example:
        >>> import tl_interp as ti
        >>> model, sae = ti.models.load("ordinal-4l"), ti.models.load_sae("ordinal-4l-res-l2")
        >>> acts = feature_activations(sae, model, ["one, two, three,", "january, february,"])
        >>> int(acts.valid.sum()), bool((acts.features[:, 0] == 0).all())  # BOS is not read
        (10, True)
    """
    batch = as_batch(model, inputs)
    name = sae_site(sae)
    store = hooks.cache(name)
    logits = store.run(model, batch.tokens, attention_mask=batch.attention_mask)
    features = sae.encode(store[name]).double().cpu()
    valid = batch.attention_mask.bool().cpu()
    reads = torch.zeros_like(valid)
    reads[:, splice_positions(sae)] = True
    valid &= reads
    top = logits[torch.arange(len(batch)), batch.last_index].argmax(-1).cpu()
    return FeatureActivations(batch, name, features * valid[..., None], valid, top)


def decoder_logits(sae: Any, model: Any, feature: int, k: int = 10) -> tuple[Tensor, Tensor] | None:
    """``W_dec[feature] @ W_U``'s ``k`` largest and ``k`` smallest entries, or ``None`` when the
    decoder does not write to the residual stream (e.g. an SAE on ``hook_z``).

    Returns:
        ``(top, bottom)``, each a ``torch.return_types.topk`` of values and token ids.

    Example:
        >>> import tl_interp as ti
        >>> model, sae = ti.models.load("ordinal-4l"), ti.models.load_sae("ordinal-4l-res-l2")
        >>> top, bottom = decoder_logits(sae, model, 17, k=3)
        >>> bool(top.values[0] >= top.values[-1] > bottom.values[-1] >= bottom.values[0])
        True
    """
    check_feature(sae, feature)
    direction = sae.W_dec[feature].detach().double().cpu()
    if direction.shape[0] != model.W_U.shape[0]:
        return None
    from transformer_lens import HookedTransformer

    from tl_interp.weights import fold

    # a TransformerBridge has no foldable norms here: its W_U is read as it is
    w_u = fold(model).unembed() if isinstance(model, HookedTransformer) else model.W_U.detach().double()
    logit = direction @ w_u.cpu()
    return logit.topk(k), logit.topk(k, largest=False)


def prompt_answers(model: Any, answers: Answers, n: int, default: Tensor) -> Tensor:
    """One token id per prompt: ``default`` when ``answers`` is None, else single-token strings
    or ids (``InputError`` for a wrong count, several tokens or ids outside the vocabulary)."""
    if answers is None:
        ids = default.cpu().long().flatten()
    elif isinstance(answers, Tensor):
        ids = answers.cpu().long().flatten()
    else:
        ids = torch.tensor([single_token(model, a, "feature ablation answers") for a in answers], dtype=torch.long)
    if ids.numel() != n:
        raise InputError(f"{ids.numel()} answers for {n} prompts; give one answer per prompt")
    vocab = d_vocab_out(model)
    bad = ids[(ids < 0) | (ids >= vocab)]
    if bad.numel():
        raise InputError(f"answer id {int(bad[0])} is outside the vocabulary (d_vocab={vocab})")
    return ids


@reordered(("sae", "model"), sae_first)
@checked
def feature_ablation(model: Any, sae: Any, inputs: Inputs, features: Sequence[int], *, answers: Answers = None,
                     seed: int = 0, n_boot: int = 2000, memory_mb: float = 1024.0, executor: Executor | None = None,
                     progress: bool = True) -> AblationResult:
    """The change in the answer's probability at each prompt's last token when each feature is ablated.

    Args:
        model: the model the SAE reads.
        sae: a sae_lens SAE on ``model``'s residual stream (``ti.models.load_sae``); the old
            order ``(sae, model, ...)`` warns.
        inputs: the prompts (text, texts, token ids or a ``Tokenized`` batch).
        features: the features to ablate, one cell each.
        answers: one answer per prompt (single-token strings or ids); default the model's own
            top prediction at each prompt's last token (one more clean forward pass).
        seed: seed of the bootstrap intervals (recorded in provenance).
        n_boot: bootstrap resamples.
        memory_mb: the budget of one stacked forward pass.
        executor: where the cells run (default: this process; ``ti.distributed``).
        progress: show a progress bar.

    Returns:
        An ``AblationResult`` over ``("feature",)``: ``values`` the mean change in probability,
        ``ci_low``/``ci_high`` (with at least 2 prompts); extras ``p_clean`` ``(batch,)``,
        ``p_ablated`` ``(feature, batch)`` and ``answers`` ``(batch,)`` token ids.

    Example:
        >>> import tl_interp as ti
        >>> model, sae = ti.models.load("ordinal-4l"), ti.models.load_sae("ordinal-4l-res-l2")
        >>> res = ti.ablation.feature_ablation(model, sae, ["one, two, three,", "march, april,"], [5, 17],
        ...                                    answers=["four", "may"], progress=False)
        >>> tuple(res.extras["p_ablated"].shape), res.labels["feature"]
        ((2, 2), ('F5', 'F17'))
    """
    if not features:
        raise SelectionError("feature_ablation: give at least one feature")
    for f in features:
        check_feature(sae, f)
    if isinstance(n_boot, bool) or n_boot < 1:
        raise OptionError(f"n_boot must be at least 1, got {n_boot}")
    batch = as_batch(model, inputs)
    options = EngineOptions(memory_mb=memory_mb)
    if answers is not None:
        ids = prompt_answers(model, answers, len(batch), torch.empty(0))
    else:
        ids = prompt_answers(model, None, len(batch), feature_activations(sae, model, batch).top_tokens)
    return feature_ablation_with_answers(sae, model, batch, list(features), ids, seed, n_boot, options, executor, progress)


def feature_ablation_with_answers(sae: Any, model: Any, batch: Tokenized, features: list[int], ids: Tensor, seed: int,
                                  n_boot: int, options: EngineOptions, executor: Executor | None,
                                  progress: bool) -> AblationResult:
    """``feature_ablation`` once the answers are known (``viz.feature_card`` reads them from its
    own activation pass)."""
    name = sae_site(sae)
    where = splice_positions(sae)
    metric = metrics.answer_prob(ids.to(batch.tokens.device), positions="last")
    cells = tuple(hooks.sae_splice(sae, hooks.ablate_features([f]), positions=where) for f in features)
    work = Plan(model, batch, metric, cells, tuple((f,) for f in features), (name,), options,
                label=f"ablating SAE features at {name}",
                signature={"study": "feature_ablation", "hook": name, "answers": ids.tolist()})
    outcome = execute(work, executor, progress=progress)
    p_clean, p_ablated = outcome.base.double().cpu(), outcome.values.double().cpu()  # (batch,), (feature, batch)
    delta = p_ablated - p_clean
    extras = {"p_clean": p_clean, "p_ablated": p_ablated, "answers": ids, "ablated": p_ablated.mean(-1),
              "base": p_clean.mean()}
    if delta.shape[-1] >= 2:
        extras["ci_low"], extras["ci_high"] = bootstrap_mean_ci(delta, n_boot=n_boot, seed=seed)
    provenance = Provenance.make(
        adapt(model).model_id, interventions=[f"ablate one SAE feature at a time at {name} (error term kept)"],
        prompt_hash=prompt_hash(batch.tokens), seed=seed,
        settings={"hook": name, "positions": str(where), "n_boot": n_boot, "higher_is_better": True,
                  "engine": outcome.paths, **outcome.stats})
    return AblationResult(values=delta.mean(-1), axes=("feature",), metric="answer_prob", provenance=provenance,
                          labels={"feature": tuple(f"F{f}" for f in features)}, extras=extras)
