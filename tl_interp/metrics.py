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
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, TypeAlias

import torch
from jaxtyping import Float, Int
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, SelectionError, ShapeError

__all__ = ["Metric", "MetricSet", "logit_diff", "answer_logprob", "answer_prob", "accuracy", "kl_div", "loss",
           "top_token", "changed", "in_set", "best_of", "bind", "is_metric"]

Answers = int | Int[Tensor, "batch"]
Reader: TypeAlias = Literal["last"] | int | Int[Tensor, "batch"] | None


@dataclass(frozen=True, eq=False)
class Metric:
    """A per-prompt score of logits, averaged over prompts when called like a TL metric.

    Attributes:
        name: what it measures, for labels (``"logit_diff"``).
        positions: where it reads: ``"last"`` (each row's last real token), an int (the same
            position in every row), a ``(batch,)`` index tensor, or ``None`` (all positions).
        score: ``logits at positions -> per-prompt values``: gets ``(..., batch, d_vocab)``
            when ``positions`` is set, ``(..., batch, pos, d_vocab)`` when it is ``None``.
        higher_is_better: the direction of improvement (for normalising and ranking).
    """

    name: str
    positions: Reader
    score: Callable[[Tensor], Tensor]
    higher_is_better: bool = True
    narrow: Callable[[Reader], tuple[Tensor, "Metric"]] | None = field(default=None, repr=False)

    def narrowed(self) -> tuple[Tensor, "Metric"] | None:
        """The vocabulary entries this metric reads, when it reads only a few, and the same
        metric scoring logits of those entries alone (``(..., batch, len(columns))``, in that
        order), reading the same positions; None when it may read any entry. Lets a study
        unembed only those columns.

        Example:
            >>> import torch
            >>> logits = torch.randn(2, 3, 9)
            >>> columns, small = logit_diff(torch.tensor([7, 2]), 4, positions=-1).narrowed()
            >>> columns.tolist(), torch.equal(small(logits[..., columns]), logit_diff(torch.tensor([7, 2]), 4, positions=-1)(logits))
            ([2, 4, 7], True)
        """
        return None if self.narrow is None else self.narrow(self.positions)

    def at(self, batch: Any) -> "Metric":
        """This metric reading ``batch``'s rows: ``"last"`` becomes each row's last real token;
        a literal position that is padding in some row is an error.

        Example:
            >>> import torch
            >>> from tl_interp.models import Tokenized
            >>> batch = Tokenized(torch.tensor([[5, 6, 0]]), torch.tensor([[1, 1, 0]]), torch.tensor([1]), [["a", "b", "-"]])
            >>> accuracy(2).at(batch).positions.tolist()
            [1]
        """
        return replace(self, positions=_bind_positions(self.positions, batch, self.name))

    def read(self, logits: Float[Tensor, "*variants batch pos d_vocab"], batch: Any = None) -> Tensor:
        """The logits this metric reads: ``(..., batch, d_vocab)`` (or all positions).

        ``batch`` (the ``Tokenized`` batch the logits come from) binds the metric first (``at``).
        """
        if batch is not None:
            return self.at(batch).read(logits)
        if self.positions == "last" and logits.ndim >= 3 and logits.shape[-3] > 1:
            raise InputError(f"metric {self.name} reads each prompt's last real token, but it was given logits of "
                             f"{logits.shape[-3]} prompts and no batch, so it cannot know where each row ends (a "
                             "right-padded row would be read at its padding); call metric(logits, batch) with the "
                             "Tokenized batch (or bind once: metric.at(batch)), or give positions=-1 if no row is "
                             "right-padded")
        positions = -1 if self.positions == "last" else self.positions
        if positions is None:
            return logits
        if isinstance(positions, int):
            return logits[..., positions, :]
        batch = logits.shape[-3]
        if positions.shape != (batch,):
            raise ShapeError(f"metric {self.name}: it reads one position per row for {positions.shape[0]} "
                             f"rows, the logits have batch={batch}")
        rows = torch.arange(batch, device=logits.device)
        return logits[..., rows, positions.to(logits.device).long(), :]

    def per_prompt(self, logits: Float[Tensor, "*variants batch pos d_vocab"],
                   batch: Any = None) -> Float[Tensor, "*variants batch"]:
        """One value per prompt (and per leading variant axis); ``batch`` as in ``read``."""
        return self.score(self.read(logits, batch))

    def __call__(self, logits: Float[Tensor, "batch pos d_vocab"], batch: Any = None) -> Float[Tensor, ""]:
        """The mean over prompts: the scalar TransformerLens's patching functions expect.

        Args:
            logits: the model's output for the batch.
            batch: the ``Tokenized`` batch the logits come from, so ``"last"`` reads each row's
                last real token; needed with more than one row unless the metric is bound
                (``metric.at(batch)``) or reads a literal position.

        Example:
            >>> import torch
            >>> from tl_interp.models import Tokenized
            >>> batch = Tokenized(torch.tensor([[5, 6, 0], [5, 6, 7]]), torch.tensor([[1, 1, 0], [1, 1, 1]]),
            ...                   torch.tensor([1, 2]), [["a", "b", "-"], ["a", "b", "c"]])
            >>> logits = torch.zeros(2, 3, 4); logits[0, 1, 2] = logits[1, 2, 2] = 4.0
            >>> float(logit_diff(2, 0)(logits, batch))
            4.0
        """
        return self.per_prompt(logits, batch).mean(-1)


@dataclass(frozen=True, eq=False)
class MetricSet:
    """Several metrics read from the same logits (one forward pass scores them all).

    Example:
        >>> import torch
        >>> ms = MetricSet({"acc": accuracy(1, positions=-1), "p": answer_prob(1, positions=-1)})
        >>> {k: v.tolist() for k, v in ms.per_prompt(torch.zeros(2, 3, 4)).items()}
        {'acc': [0.0, 0.0], 'p': [0.25, 0.25]}
    """

    metrics: Mapping[str, Metric]

    def __post_init__(self) -> None:
        if not self.metrics:
            raise InputError("a MetricSet needs at least one metric")
        first = next(iter(self.metrics.values()))
        for name, m in self.metrics.items():
            if not isinstance(m, Metric):
                raise InputError(f"MetricSet member {name!r} is not a tl_interp Metric")
            if not _same_positions(m.positions, first.positions):
                raise InputError(f"MetricSet members must read the same positions; {name!r} reads {m.positions!r}, "
                                 f"the first reads {first.positions!r}")

    @property
    def name(self) -> str:
        return "+".join(self.metrics)

    @property
    def positions(self) -> Reader:
        return next(iter(self.metrics.values())).positions

    def at(self, batch: Any) -> "MetricSet":
        """Every member bound to ``batch`` (see ``Metric.at``)."""
        return MetricSet({k: m.at(batch) for k, m in self.metrics.items()})

    def read(self, logits: Tensor, batch: Any = None) -> Tensor:
        return next(iter(self.metrics.values())).read(logits, batch)

    def score(self, read: Tensor) -> dict[str, Tensor]:
        return {k: m.score(read) for k, m in self.metrics.items()}

    def per_prompt(self, logits: Tensor, batch: Any = None) -> dict[str, Tensor]:
        """Each member's per-prompt values; ``batch`` as in ``Metric.read``."""
        return self.score(self.read(logits, batch))


def _same_positions(a: Reader, b: Reader) -> bool:
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    return a == b


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


def _bind_positions(positions: Reader, batch: Any, name: str) -> Reader:
    mask = batch.attention_mask.bool()
    seq = mask.shape[1]
    if positions == "last":
        return batch.last_index.long()
    if positions is None:
        return None
    index = (torch.full((mask.shape[0],), positions, dtype=torch.long) if isinstance(positions, int)
             else positions.long())
    if index.shape != (mask.shape[0],):
        raise ShapeError(f"metric {name}: it reads {index.shape[0]} positions for a batch of {mask.shape[0]} prompts")
    if bool(((index < -seq) | (index >= seq)).any()):
        raise SelectionError(f"metric {name}: positions {index.tolist()} are out of range for {seq} positions")
    index = index % seq
    pads = (~mask[torch.arange(mask.shape[0]), index.to(mask.device)]).nonzero().flatten().tolist()
    if pads:
        raise SelectionError(f"metric {name}: it reads position {positions!r}, which is padding in rows {pads}; use "
                             "positions='last' (each prompt's last real token), the default")
    return index.to(batch.tokens.device)


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
