"""Metrics of a model's output: logit difference, answer probability, loss, KL, accuracy.

A ``Metric`` is a function of logits ``(batch, pos, d_vocab) -> scalar``, exactly as
TransformerLens's patching functions take it, so one metric object serves both libraries.
It also says *where it reads* (one position per prompt, usually the last real token), which
lets studies compute logits only at those positions, and it evaluates per prompt and over
stacked variants (leading axes before ``batch``) without a Python loop.

Answers are one token id per prompt (an int for all, or a ``(batch,)`` tensor).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from beartype import beartype
from jaxtyping import Float, Int, jaxtyped
from torch import Tensor

from tl_interp.errors import ShapeError

__all__ = ["Metric", "logit_diff", "answer_logprob", "answer_prob", "accuracy", "kl_div", "loss"]

Answers = int | Int[Tensor, "batch"]
Reader = int | Int[Tensor, "batch"] | None


@dataclass(frozen=True, eq=False)
class Metric:
    """A per-prompt score of logits, averaged over prompts when called like a TL metric.

    Attributes:
        name: what it measures, for labels (``"logit_diff"``).
        positions: where it reads: an int (same position in every row), a ``(batch,)``
            index tensor (one per row, e.g. the last real token), or ``None`` (all positions).
        score: ``logits at positions -> per-prompt values``: gets ``(..., batch, d_vocab)``
            when ``positions`` is set, ``(..., batch, pos, d_vocab)`` when it is ``None``.
        higher_is_better: the direction of improvement (for normalising and ranking).
    """

    name: str
    positions: Reader
    score: Callable[[Tensor], Tensor]
    higher_is_better: bool = True

    def read(self, logits: Float[Tensor, "*variants batch pos d_vocab"]) -> Tensor:
        """The logits this metric reads: ``(..., batch, d_vocab)`` (or all positions)."""
        if self.positions is None:
            return logits
        if isinstance(self.positions, int):
            return logits[..., self.positions, :]
        batch = logits.shape[-3]
        if self.positions.shape != (batch,):
            raise ShapeError(f"metric {self.name}: it reads one position per row for {self.positions.shape[0]} "
                             f"rows, the logits have batch={batch}")
        rows = torch.arange(batch, device=logits.device)
        return logits[..., rows, self.positions.to(logits.device).long(), :]

    def per_prompt(self, logits: Float[Tensor, "*variants batch pos d_vocab"]) -> Float[Tensor, "*variants batch"]:
        """One value per prompt (and per leading variant axis)."""
        return self.score(self.read(logits))

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"]) -> Float[Tensor, ""]:
        """The mean over prompts: the scalar TransformerLens's patching functions expect."""
        return self.per_prompt(logits).mean(-1)


def _gather(logits: Tensor, answers: Answers) -> Tensor:
    if isinstance(answers, int):
        return logits[..., answers]
    if answers.shape[0] != logits.shape[-2]:
        raise ShapeError(f"{answers.shape[0]} answers for a batch of {logits.shape[-2]} prompts; give one per prompt")
    index = answers.to(logits.device).long().expand(logits.shape[:-1]).unsqueeze(-1)
    return logits.gather(-1, index).squeeze(-1)


def _check_reader(positions: Reader) -> Reader:
    if isinstance(positions, Tensor):
        if positions.ndim != 1 or positions.dtype.is_floating_point:
            raise ShapeError("metric positions must be an int or a (batch,) integer tensor")
        return positions.detach()
    return positions


@jaxtyped(typechecker=beartype)
def logit_diff(correct: Answers, incorrect: Answers, *, positions: int | Int[Tensor, "batch"] = -1) -> Metric:
    """logit(correct) - logit(incorrect) at the read position, per prompt.

    Example:
        >>> import torch
        >>> logits = torch.zeros(2, 3, 5); logits[:, -1, 1] = 2.0
        >>> float(logit_diff(1, 0)(logits))
        2.0
    """
    return Metric("logit_diff", _check_reader(positions), lambda x: _gather(x, correct) - _gather(x, incorrect))


@jaxtyped(typechecker=beartype)
def answer_logprob(answers: Answers, *, positions: int | Int[Tensor, "batch"] = -1) -> Metric:
    """log p(answer) at the read position, per prompt.

    Example:
        >>> import torch
        >>> round(float(answer_logprob(0)(torch.zeros(1, 2, 4))), 4)
        -1.3863
    """
    return Metric("answer_logprob", _check_reader(positions),
                  lambda x: _gather(x.float().log_softmax(-1), answers))


@jaxtyped(typechecker=beartype)
def answer_prob(answers: Answers, *, positions: int | Int[Tensor, "batch"] = -1) -> Metric:
    """p(answer) at the read position, per prompt.

    Example:
        >>> import torch
        >>> float(answer_prob(0)(torch.zeros(1, 2, 4)))
        0.25
    """
    return Metric("answer_prob", _check_reader(positions), lambda x: _gather(x.float().softmax(-1), answers))


@jaxtyped(typechecker=beartype)
def accuracy(answers: Answers, *, positions: int | Int[Tensor, "batch"] = -1) -> Metric:
    """1.0 where the top token is the answer, else 0.0, per prompt.

    Example:
        >>> import torch
        >>> logits = torch.zeros(2, 1, 3); logits[0, 0, 2] = 1.0
        >>> accuracy(torch.tensor([2, 2])).per_prompt(logits).tolist()
        [1.0, 0.0]
    """
    def score(x: Tensor) -> Tensor:
        top = x.argmax(-1)
        target = torch.as_tensor(answers, device=x.device).expand(top.shape)
        return (top == target).to(torch.float32)

    return Metric("accuracy", _check_reader(positions), score)


@jaxtyped(typechecker=beartype)
def kl_div(reference: Float[Tensor, "batch d_vocab"], *, positions: int | Int[Tensor, "batch"] = -1) -> Metric:
    """KL(reference || model) of next-token distributions at the read position, per prompt.

    ``reference`` is the reference run's logits at the same positions (e.g. the clean run).
    Lower is closer, so ``higher_is_better`` is False.

    Example:
        >>> import torch
        >>> ref = torch.randn(2, 5)
        >>> float(kl_div(ref)(ref[:, None, :]))
        0.0
    """
    ref_logp = reference.detach().double().log_softmax(-1)

    def score(x: Tensor) -> Tensor:
        logp = x.double().log_softmax(-1)
        r = ref_logp.to(x.device)
        return (r.exp() * (r - logp)).sum(-1).clamp(min=0).to(torch.float32)

    return Metric("kl_div", _check_reader(positions), score, higher_is_better=False)


@jaxtyped(typechecker=beartype)
def loss(tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"] | None = None) -> Metric:
    """Mean next-token cross-entropy over each prompt's real tokens (reads every position).

    Example:
        >>> import torch
        >>> round(float(loss(torch.tensor([[0, 1, 2]]))(torch.zeros(1, 3, 4))), 4)
        1.3863
    """
    targets = tokens[:, 1:]
    mask = torch.ones_like(targets, dtype=torch.float32) if attention_mask is None else attention_mask[:, 1:].float()

    def score(x: Tensor) -> Tensor:
        logp = x[..., :-1, :].float().log_softmax(-1)
        picked = logp.gather(-1, targets.to(x.device).expand(logp.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        m = mask.to(x.device)
        return -(picked * m).sum(-1) / m.sum(-1).clamp(min=1)

    return Metric("loss", None, score, higher_is_better=False)
