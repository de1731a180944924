"""The metric constructors: logit difference, answer (log-)probability, accuracy, KL, loss, ...

Each returns a ``Metric`` (``_metric.py``) whose ``score`` reads logits at its positions and
gives one value per prompt. Answers are one token id per prompt (an int for all, or a
``(batch,)`` tensor); an answer of ``-1`` means "no expected answer" and scores NaN for that
prompt. A token id outside the vocabulary is refused when the logits are read.
"""

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, SelectionError, ShapeError
from tl_interp.metrics._metric import Answers, Metric, Reader

__all__ = ["logit_diff", "answer_logprob", "answer_prob", "accuracy", "kl_div", "loss", "top_token", "changed",
           "in_set", "best_of"]


def _check_ids(ids: Answers, vocab: int, what: str, *, allow_missing: bool = True) -> None:
    """Token ids the logits can be read at: ``0 <= id < d_vocab`` (``-1``: no answer, if allowed).

    An id past the vocabulary would be an index error -- or, for comparisons with the top
    token, a silent "never right" -- and any other negative id a silent NaN."""
    values = torch.as_tensor(ids)
    if values.numel() == 0:
        return
    low, high = int(values.min()), int(values.max())
    floor = -1 if allow_missing else 0
    if low < floor or high >= vocab:
        bad = high if high >= vocab else low
        missing = " (-1 means 'no expected answer')" if allow_missing else ""
        raise InputError(f"{what}: token id {bad} is outside the vocabulary (d_vocab={vocab}){missing}")


def _gather(logits: Tensor, answers: Answers) -> Tensor:
    _check_ids(answers, logits.shape[-1], "answers")
    if isinstance(answers, int):
        if answers < 0:
            return torch.full(logits.shape[:-1], float("nan"), device=logits.device)
        return logits[..., answers]
    if answers.shape[0] != logits.shape[-2]:
        raise ShapeError(f"{answers.shape[0]} answers for a batch of {logits.shape[-2]} prompts; give one per prompt")
    ids = answers.to(logits.device).long()
    picked = logits.gather(-1, ids.clamp_min(0).expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    return torch.where(ids >= 0, picked, torch.full_like(picked, float("nan")))


def _check_reader(positions: Reader) -> Reader:
    if isinstance(positions, Tensor):
        if positions.ndim != 1 or positions.dtype.is_floating_point:
            raise ShapeError("metric positions must be 'last', an int or a (batch,) integer tensor")
        return positions.detach()
    if isinstance(positions, str) and positions != "last":
        raise SelectionError(f"metric positions must be 'last', an int or a (batch,) tensor, not {positions!r}")
    return positions


def _check_answers(answers: Answers, what: str = "answers") -> None:
    if isinstance(answers, Tensor) and answers.dtype.is_floating_point:
        raise InputError(f"{what} must be token ids (integers), not {answers.dtype}")


@checked
def logit_diff(correct: Answers, incorrect: Answers, *, positions: Reader = "last") -> Metric:
    """logit(correct) - logit(incorrect) at the read position, per prompt.

    Example:
        >>> import torch
        >>> logits = torch.zeros(2, 3, 5); logits[:, -1, 1] = 2.0
        >>> float(logit_diff(1, 0, positions=-1)(logits))
        2.0
    """
    _check_answers(correct, "correct")
    _check_answers(incorrect, "incorrect")

    def narrow(at: Reader) -> tuple[Tensor, Metric]:
        columns, (c, i) = _compact(correct, incorrect)
        return columns, logit_diff(c, i, positions=at)

    return Metric("logit_diff", _check_reader(positions), lambda x: _gather(x, correct) - _gather(x, incorrect),
                  narrow=narrow)


def _compact(*answers: Answers) -> tuple[Tensor, list[Answers]]:
    """The token ids the answers name (sorted, unique) and each answer as an index into them
    (``-1``, "no answer", stays ``-1``)."""
    ids = torch.cat([torch.as_tensor(a).flatten().long().cpu() for a in answers])
    columns = ids[ids >= 0].unique()
    out: list[Answers] = []
    for a in answers:
        t = torch.as_tensor(a).long()
        at = torch.searchsorted(columns.to(t.device), t.clamp_min(0))
        mapped = torch.where(t >= 0, at, torch.full_like(at, -1))
        out.append(int(mapped) if isinstance(a, int) else mapped)
    return columns, out


@checked
def answer_logprob(answers: Answers, *, positions: Reader = "last") -> Metric:
    """log p(answer) at the read position, per prompt.

    Example:
        >>> import torch
        >>> round(float(answer_logprob(0)(torch.zeros(1, 2, 4))), 4)
        -1.3863
    """
    _check_answers(answers)
    return Metric("answer_logprob", _check_reader(positions), lambda x: _gather(x.float().log_softmax(-1), answers))


@checked
def answer_prob(answers: Answers, *, positions: Reader = "last") -> Metric:
    """p(answer) at the read position, per prompt.

    Example:
        >>> import torch
        >>> float(answer_prob(0)(torch.zeros(1, 2, 4)))
        0.25
    """
    _check_answers(answers)
    return Metric("answer_prob", _check_reader(positions), lambda x: _gather(x.float().softmax(-1), answers))


def _answer_tensor(answers: Answers, device: torch.device, shape: torch.Size) -> Tensor:
    return torch.as_tensor(answers, device=device).long().expand(shape)


@checked
def accuracy(answers: Answers, *, positions: Reader = "last") -> Metric:
    """1.0 where the top token is the answer, else 0.0, per prompt.

    Example:
        >>> import torch
        >>> logits = torch.zeros(2, 1, 3); logits[0, 0, 2] = 1.0
        >>> accuracy(torch.tensor([2, 2]), positions=-1).per_prompt(logits).tolist()
        [1.0, 0.0]
    """
    _check_answers(answers)

    def score(x: Tensor) -> Tensor:
        _check_ids(answers, x.shape[-1], "accuracy answers")
        top = x.argmax(-1)
        target = _answer_tensor(answers, x.device, top.shape)
        hit = (top == target).to(torch.float32)
        return torch.where(target >= 0, hit, torch.full_like(hit, float("nan")))

    return Metric("accuracy", _check_reader(positions), score)


@checked
def top_token(*, positions: Reader = "last") -> Metric:
    """The id of the top-1 token, per prompt (a float tensor of integral values).

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 2, 3); logits[0, -1, 2] = 1.0
        >>> top_token().per_prompt(logits).tolist()
        [2.0]
    """
    return Metric("top_token", _check_reader(positions), lambda x: x.argmax(-1).to(torch.float32))


@checked
def changed(reference: Answers, *, positions: Reader = "last") -> Metric:
    """1.0 where the top-1 token differs from ``reference`` (e.g. the unsteered top-1), per prompt.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 1, 3); logits[0, 0, 2] = 1.0
        >>> changed(torch.tensor([0])).per_prompt(logits).tolist()
        [1.0]
    """
    _check_answers(reference, "reference")

    def score(x: Tensor) -> Tensor:
        _check_ids(reference, x.shape[-1], "changed reference", allow_missing=False)
        return (x.argmax(-1) != _answer_tensor(reference, x.device, x.shape[:-1])).to(torch.float32)

    return Metric("changed", _check_reader(positions), score)


@checked
def in_set(tokens: Int[Tensor, "n_tokens"], *, positions: Reader = "last") -> Metric:
    """1.0 where the top-1 token is one of ``tokens`` (e.g. any expected answer), per prompt.

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 1, 4); logits[0, 0, 3] = 1.0
        >>> in_set(torch.tensor([1, 3])).per_prompt(logits).tolist()
        [1.0]
    """
    if tokens.numel() == 0:
        raise InputError("in_set needs at least one token id")
    ids = tokens.detach().long()

    def score(x: Tensor) -> Tensor:
        _check_ids(ids, x.shape[-1], "in_set tokens", allow_missing=False)
        return torch.isin(x.argmax(-1), ids.to(x.device)).to(torch.float32)

    return Metric("in_set", _check_reader(positions), score)


@checked
def best_of(candidates: Int[Tensor, "n_candidates"], answers: Answers, *, positions: Reader = "last") -> Metric:
    """1.0 where, among ``candidates`` only, the answer has the highest logit, per prompt
    (chance is 1 / number of candidates): did the model pick the right member of the class?

    Example:
        >>> import torch
        >>> logits = torch.zeros(1, 1, 5); logits[0, 0, 4] = 9.0; logits[0, 0, 2] = 1.0
        >>> best_of(torch.tensor([1, 2]), 2).per_prompt(logits).tolist()
        [1.0]
    """
    if candidates.numel() == 0:
        raise InputError("best_of needs at least one candidate token id")
    _check_answers(answers)
    ids = candidates.detach().long()

    def score(x: Tensor) -> Tensor:
        _check_ids(ids, x.shape[-1], "best_of candidates", allow_missing=False)
        _check_ids(answers, x.shape[-1], "best_of answers")
        cand = ids.to(x.device)
        picked = cand[x[..., cand].argmax(-1)]
        target = _answer_tensor(answers, x.device, picked.shape)
        hit = (picked == target).to(torch.float32)
        return torch.where(target >= 0, hit, torch.full_like(hit, float("nan")))

    return Metric("best_of", _check_reader(positions), score)


@checked
def kl_div(reference: Float[Tensor, "batch d_vocab"], *, positions: Reader = "last") -> Metric:
    """KL(reference || model) of next-token distributions at the read position, per prompt.

    ``reference`` is the reference run's logits at the same positions (e.g. the clean run).
    Lower is closer, so ``higher_is_better`` is False.

    Example:
        >>> import torch
        >>> ref = torch.randn(2, 5)
        >>> float(kl_div(ref, positions=-1)(ref[:, None, :]))
        0.0
    """
    if not bool(torch.isfinite(reference).all()):
        raise InputError("kl_div: the reference logits have non-finite entries")
    ref_logp = reference.detach().double().log_softmax(-1)

    def score(x: Tensor) -> Tensor:
        if ref_logp.shape != x.shape[-2:]:
            raise ShapeError(f"kl_div: the reference logits have shape {tuple(ref_logp.shape)}, the logits it reads "
                             f"have (batch, d_vocab) = {tuple(x.shape[-2:])}; give the reference run's logits at the "
                             "same positions, one row per prompt")
        logp = x.double().log_softmax(-1)
        r = ref_logp.to(x.device)
        return (r.exp() * (r - logp)).sum(-1).clamp(min=0).to(torch.float32)

    return Metric("kl_div", _check_reader(positions), score, higher_is_better=False)


@checked
def loss(tokens: Int[Tensor, "batch pos"], attention_mask: Int[Tensor, "batch pos"] | None = None) -> Metric:
    """Mean next-token cross-entropy over each prompt's real tokens (reads every position).

    Example:
        >>> import torch
        >>> round(float(loss(torch.tensor([[0, 1, 2]]))(torch.zeros(1, 3, 4))), 4)
        1.3863
    """
    targets = tokens[:, 1:]
    if attention_mask is None:
        mask = torch.ones_like(targets, dtype=torch.float32)
    else:  # a target counts when it and the position predicting it are both real
        mask = (attention_mask[:, 1:] * attention_mask[:, :-1]).float()

    def score(x: Tensor) -> Tensor:
        if tuple(x.shape[-3:-1]) != tuple(tokens.shape):
            raise ShapeError(f"loss: the tokens have shape {tuple(tokens.shape)}, the logits (batch, pos) = "
                             f"{tuple(x.shape[-3:-1])}; give the tokens of the run being scored")
        _check_ids(targets, x.shape[-1], "loss tokens", allow_missing=False)
        logp = x[..., :-1, :].float().log_softmax(-1)
        picked = logp.gather(-1, targets.to(x.device).expand(logp.shape[:-1]).unsqueeze(-1)).squeeze(-1)
        m = mask.to(x.device)
        return -(picked * m).sum(-1) / m.sum(-1).clamp(min=1)

    return Metric("loss", None, score, higher_is_better=False)
