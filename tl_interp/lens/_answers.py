"""Answers the lens and DLA read: token ids per prompt, with the labels a result shows."""

from collections.abc import Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

from tl_interp._tokens import single_token
from tl_interp.errors import InputError, ShapeError
from tl_interp.models._adapter import adapt
from tl_interp.sites import d_vocab_out

__all__ = ["AnswerTokens", "answer_ids", "token_strings"]

AnswerTokens: TypeAlias = int | str | Sequence[int | str] | Tensor


def _single(model: Any, answer: int | str, what: str) -> int:
    if isinstance(answer, bool):
        raise InputError(f"{what}: {answer!r} is a bool; give a token id or a single-token string")
    if isinstance(answer, int):
        return answer
    return single_token(model, answer, what)


def answer_ids(model: Any, answers: AnswerTokens, n: int, what: str = "answers") -> tuple[Tensor, tuple[str, ...]]:
    """``(n, k)`` token ids (row i's answers) and one label per column.

    Accepted: a token id or single-token string (every prompt), a list of them (all tracked in
    every prompt), a ``(batch,)`` tensor (one answer per prompt) or a ``(batch, k)`` tensor.
    Ids outside the vocabulary are an ``InputError`` before any forward pass.
    """
    if isinstance(answers, Tensor):
        if answers.dtype.is_floating_point or answers.dtype == torch.bool or answers.ndim not in (1, 2):
            raise ShapeError(f"{what}: a tensor of answers holds integer token ids, (batch,) or (batch, k); got "
                             f"{answers.dtype} {tuple(answers.shape)}")
        if answers.shape[0] != n:
            raise ShapeError(f"{what}: {answers.shape[0]} rows of answers for {n} prompts; give one row per prompt")
        ids = answers.long().cpu().reshape(n, -1)
        labels = tuple(f"{what} {j}" for j in range(ids.shape[1])) if ids.shape[1] > 1 else (what,)
    else:
        items = [answers] if isinstance(answers, int | str) else list(answers)
        if not items:
            raise InputError(f"{what}: no answers given")
        flat = [_single(model, a, what) for a in items]
        ids = torch.tensor(flat, dtype=torch.long)[None].expand(n, -1)
        labels = tuple(a if isinstance(a, str) else token_strings(model, [a])[0] for a in items)
    vocab = d_vocab_out(model)
    bad = ids[(ids < 0) | (ids >= vocab)]
    if bad.numel():
        raise InputError(f"{what}: token id {int(bad[0])} is outside the vocabulary (d_vocab={vocab})")
    return ids.contiguous(), labels


def token_strings(model: Any, ids: Sequence[int]) -> list[str]:
    """Each id's text (its id in brackets when the model has no tokenizer)."""
    tok = adapt(model).tokenizer
    if tok is None:
        return [f"[{i}]" for i in ids]
    return list(tok.batch_decode([[int(i)] for i in ids], clean_up_tokenization_spaces=False))
