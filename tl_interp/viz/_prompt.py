"""What the model-based views share: one prompt's real tokens and labels, and range checks.

A view draws one prompt. It may be given as text, as a list of prompts with ``row=``, as a
``Tokenized`` batch or as token ids with an attention mask; padding is removed, and the
real tokens are run on their own, exactly as an unbatched run would see them.
"""

from collections.abc import Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

from tl_interp._checks import check_layer as checked_layer
from tl_interp.errors import InputError, SelectionError, UnsupportedError
from tl_interp.models import Tokenized, adapt
from tl_interp.models._adapter import ModelAdapter

__all__ = ["Prompt", "one_prompt", "token_labels", "check_layer", "check_heads"]

Prompt: TypeAlias = str | Sequence[str] | Tokenized | Tensor


def token_labels(adapter: ModelAdapter, ids: Sequence[int]) -> list[str]:
    """One string per token id (the id itself when the model has no tokenizer)."""
    tok = adapter.tokenizer
    if tok is None:
        return [str(int(i)) for i in ids]
    return list(tok.batch_decode([[int(i)] for i in ids], clean_up_tokenization_spaces=False))


def _row(n_rows: int, row: int) -> int:
    if not -n_rows <= row < n_rows:
        raise SelectionError(f"row {row} is out of range for {n_rows} prompts; pick 0..{n_rows - 1}")
    return row % n_rows


def one_prompt(model: Any, prompt: Prompt, *, row: int = 0,
               attention_mask: Tensor | None = None) -> tuple[Tensor, list[str], ModelAdapter]:
    """The real tokens ``(1, pos)`` of one prompt, their labels, and the model's adapter.

    Raises:
        SelectionError: ``row`` beyond the batch.
        InputError: token ids of the wrong rank or dtype, a mask of another shape, no real tokens.
    """
    adapter = adapt(model)
    if isinstance(prompt, str) or (isinstance(prompt, Sequence) and not isinstance(prompt, Tensor)):
        if not isinstance(prompt, str) and not prompt:
            raise InputError("no prompts given; pass a string or a non-empty list of strings")
        prompt = adapter.tokenize(prompt)
    if isinstance(prompt, Tokenized):
        tokens, mask = prompt.tokens, prompt.attention_mask
    else:
        if prompt.dtype not in (torch.int64, torch.int32) or prompt.ndim not in (1, 2):
            raise InputError(f"token ids must be a (pos,) or (batch, pos) integer tensor, got "
                             f"{prompt.dtype} of shape {tuple(prompt.shape)}")
        tokens = prompt if prompt.ndim == 2 else prompt[None]
        mask = torch.ones_like(tokens) if attention_mask is None else attention_mask
        if mask.shape != tokens.shape:
            raise InputError(f"attention_mask has shape {tuple(mask.shape)}, the tokens {tuple(tokens.shape)}")
    i = _row(tokens.shape[0], row)
    ids = tokens[i][mask[i].bool()]
    if ids.numel() == 0:
        raise InputError(f"prompt row {i} has no real tokens (its attention mask is all zeros)")
    return ids[None], token_labels(adapter, ids.tolist()), adapter


def check_layer(adapter: ModelAdapter, layer: int) -> None:
    """Raise SelectionError unless ``0 <= layer < n_layers``."""
    n = adapter.n_layers
    if n is None:
        raise UnsupportedError(f"{adapter.model_id} declares no n_layers; attention views need a transformer")
    checked_layer(layer, n, adapter.model_id)


def check_heads(adapter: ModelAdapter, heads: Any) -> list[int]:
    """The heads to show (all by default); SelectionError for an index beyond ``n_heads``."""
    n = adapter.n_heads or 0
    if heads is None:
        chosen = list(range(n))
    elif isinstance(heads, (slice, Tensor)) or isinstance(heads, int):
        from tl_interp.hooks._select import index_mask

        chosen = index_mask(heads, n, "head", "heads=").nonzero().flatten().tolist()
    else:
        chosen = [int(h) for h in heads]
    if not chosen:
        raise SelectionError("heads=[] selects nothing; pass at least one head index or None for all")
    bad = [h for h in chosen if not 0 <= h < n]
    if bad:
        raise SelectionError(f"head {bad[0]} is out of range: {adapter.model_id} has {n} heads per layer "
                             f"(0..{n - 1})")
    return chosen
