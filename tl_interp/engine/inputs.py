"""Inputs: every study and reader takes prompts the same way, checked before any forward pass.

``Inputs`` is a string, a list of strings, a ``(batch, pos)`` token tensor (with an optional
``attention_mask``), or a ``Tokenized`` batch. ``as_batch`` turns any of them into a
``Tokenized`` (tokens, attention mask, each row's last real token, token strings) and
refuses, with an ``InputError`` that names the row and the fix, what a forward pass would
get silently wrong or fail on deep inside TransformerLens: float "tokens", ids outside the
vocabulary, an empty sequence, masks of the wrong shape or with holes, prompts longer than
the model's context (tokenisation never truncates). Words a word-level vocabulary does not
have (read as its unknown token) give a ``TlInterpWarning``.
"""

import warnings
from collections.abc import Sequence
from typing import Any, TypeAlias

import torch
from torch import Tensor

from tl_interp.errors import InputError, ShapeError, TlInterpWarning, UnsupportedError
from tl_interp.models._adapter import Tokenized, adapt
from tl_interp.positions import real_bounds

__all__ = ["Inputs", "as_batch", "paired_batches", "check_tokens", "context_length", "by_length"]

Inputs: TypeAlias = str | Sequence[str] | Tensor | Tokenized


def context_length(model: Any) -> int | None:
    """The model's context length (``cfg.n_ctx``), or None when it declares none."""
    n_ctx = getattr(getattr(model, "cfg", None), "n_ctx", None)
    return int(n_ctx) if isinstance(n_ctx, int) and n_ctx > 0 else None


def _vocab(model: Any) -> int | None:
    d_vocab = getattr(getattr(model, "cfg", None), "d_vocab", None)
    return int(d_vocab) if isinstance(d_vocab, int) and d_vocab > 0 else None


def _check_mask(mask: Tensor, shape: tuple[int, ...], role: str) -> Tensor:
    if not isinstance(mask, Tensor):
        raise InputError(f"{role}: attention_mask must be a tensor, not {type(mask).__name__}")
    if tuple(mask.shape) != shape:
        raise InputError(f"{role}: attention_mask has shape {tuple(mask.shape)}, the tokens have {shape}; "
                         "give one 0/1 entry per token")
    if mask.dtype.is_floating_point or not bool(((mask == 0) | (mask == 1)).all()):
        raise InputError(f"{role}: attention_mask must hold 0 (padding) and 1 (real token) only")
    mask = mask.long()
    first, last = real_bounds(mask)
    span = mask.sum(1)
    holes = (span != last - first + 1).nonzero().flatten().tolist()
    if holes:
        raise InputError(f"{role}: attention_mask rows {holes} have padding between real tokens; pad on one side only")
    return mask


def _check_ids(model: Any, tokens: Tensor, role: str) -> None:
    vocab = _vocab(model)
    if vocab is None:
        return
    bad = ((tokens < 0) | (tokens >= vocab)).nonzero()
    if len(bad):
        row, pos = (int(i) for i in bad[0])
        why = " (a negative id would index the embedding from the end)" if int(tokens[row, pos]) < 0 else ""
        raise InputError(f"{role}: token id {int(tokens[row, pos])} at row {row}, position {pos} is outside the "
                         f"vocabulary (d_vocab={vocab}){why}; give ids in 0..{vocab - 1}")


def check_tokens(model: Any, tokens: Any, role: str = "inputs") -> Tensor:
    """The one check of token ids every entry point uses (studies, ``collect``, steering,
    ``Intervention.run`` and every forward or ``generate`` call made under ``applied``).

    Token ids must be an integer tensor of shape ``(pos,)`` or ``(batch, pos)`` with at least
    one row and one position, each id in ``0..d_vocab-1``: a negative id would silently index
    the embedding from the end, a larger one fail deep inside TransformerLens.

    Args:
        model: the model the ids are for (its ``cfg.d_vocab``).
        tokens: the ids.
        role: what they are, for the error message (``"clean"``, ``"run"``).

    Returns:
        ``(batch, pos)`` ids (a ``(pos,)`` tensor gets a batch axis of one).

    Example:
        >>> import torch
        >>> from types import SimpleNamespace
        >>> model = SimpleNamespace(cfg=SimpleNamespace(d_vocab=5))
        >>> check_tokens(model, torch.tensor([1, 2])).tolist()
        [[1, 2]]
        >>> check_tokens(model, torch.tensor([[1, -2]]), "run")
        Traceback (most recent call last):
        ...
        tl_interp.errors.InputError: run: token id -2 at row 0, position 1 is outside the vocabulary (d_vocab=5) (a negative id would index the embedding from the end); give ids in 0..4
    """
    if not isinstance(tokens, Tensor):
        raise InputError(f"{role}: token ids must be a tensor, not {type(tokens).__name__}")
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.is_complex():
        raise InputError(f"{role}: token ids must be an integer tensor, not {tokens.dtype} (residual-stream inputs "
                         "are not token ids); convert with .long() if they are ids")
    shaped = tokens[None] if tokens.ndim == 1 else tokens
    if shaped.ndim != 2 or shaped.shape[0] == 0 or shaped.shape[1] == 0:
        raise InputError(f"{role}: token ids must be (batch, pos) with at least one row and one position; "
                         f"got shape {tuple(tokens.shape)}")
    _check_ids(model, shaped, role)
    return shaped


def _check_length(model: Any, width: int, role: str, lengths: list[int] | None = None) -> None:
    n_ctx = context_length(model)
    if n_ctx is not None and width > n_ctx:
        which = "" if lengths is None else f" (prompts {[i for i, n in enumerate(lengths) if n > n_ctx]})"
        raise InputError(f"{role}: {width} tokens{which} exceed the model's context of n_ctx={n_ctx}; shorten the "
                         "prompts (tl_interp never truncates them)")


def _str_tokens(model: Any, tokens: Tensor) -> list[list[str]]:
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        return [[str(t) for t in row] for row in tokens.tolist()]
    return [tok.batch_decode([[t] for t in row], clean_up_tokenization_spaces=False) for row in tokens.tolist()]


def as_batch(model: Any, inputs: Inputs, *, attention_mask: Tensor | None = None, role: str = "inputs",
             prepend_bos: bool | None = None) -> Tokenized:
    """Any accepted form of prompts as a checked ``Tokenized`` batch on the model's device.

    Args:
        model: a HookedTransformer, HookedSAETransformer or TransformerBridge (models that take
            token ids).
        inputs: a string, a list of strings (tokenised one by one and right-padded), a token
            tensor ``(batch, pos)`` or ``(pos,)``, or a ``Tokenized`` batch.
        attention_mask: with a token tensor: 1 on real tokens, 0 on padding (either side).
        role: what the inputs are (``"clean"``, ``"positive"``), for error messages.
        prepend_bos: for strings, override the model's default.

    Returns:
        A ``Tokenized`` with tokens, mask, last real index per row and token strings.

    Example:
        >>> import torch
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> batch = as_batch(HookedTransformer(cfg), torch.tensor([[1, 2, 3], [4, 0, 0]]),
        ...                  attention_mask=torch.tensor([[1, 1, 1], [1, 0, 0]]))
        >>> batch.last_index.tolist()
        [2, 0]
        >>> as_batch(HookedTransformer(cfg), torch.tensor([[1, 9]]))
        Traceback (most recent call last):
        ...
        tl_interp.errors.InputError: inputs: token id 9 at row 0, position 1 is outside the vocabulary (d_vocab=5); give ids in 0..4
    """
    family = adapt(model).family
    if family == "custom":
        raise UnsupportedError(f"{role}: {type(model).__name__} is a custom HookedRootModule; studies that take "
                               "prompts need a transformer (HookedTransformer, HookedSAETransformer or "
                               "TransformerBridge). Run interventions on it directly: Intervention.run(model, x)")
    if isinstance(inputs, Tokenized):
        if attention_mask is not None:
            raise InputError(f"{role}: a Tokenized batch carries its own attention mask; don't pass attention_mask")
        mask = _check_mask(inputs.attention_mask, tuple(inputs.tokens.shape), role)
        if not torch.equal(real_bounds(mask)[1].cpu(), inputs.last_index.cpu().long()):
            raise InputError(f"{role}: the Tokenized batch's last_index disagrees with its attention mask")
        check_tokens(model, inputs.tokens, role)
        _check_length(model, inputs.tokens.shape[1], role)
        return inputs
    if isinstance(inputs, Tensor):
        if inputs.ndim == 1 and isinstance(attention_mask, Tensor):
            attention_mask = attention_mask.reshape(1, -1)
        tokens = check_tokens(model, inputs, role)
        mask = (torch.ones_like(tokens, dtype=torch.long) if attention_mask is None
                else _check_mask(attention_mask, tuple(tokens.shape), role))
        _check_length(model, tokens.shape[1], role)
        device = tokens.device
        return Tokenized(tokens.long(), mask.to(device), real_bounds(mask)[1].to(device), _str_tokens(model, tokens))
    if attention_mask is not None:
        raise InputError(f"{role}: attention_mask goes with token ids; strings are tokenised with their own mask")
    if isinstance(inputs, str):
        texts = [inputs]
    elif isinstance(inputs, Sequence) and all(isinstance(t, str) for t in inputs):
        texts = list(inputs)
    else:
        raise InputError(f"{role}: expected a string, a list of strings, token ids or a Tokenized batch; got "
                         f"{type(inputs).__name__}")
    if not texts:
        raise InputError(f"{role}: the list of prompts is empty")
    batch = adapt(model).tokenize(texts, prepend_bos=prepend_bos)
    _check_length(model, batch.tokens.shape[1], role, batch.attention_mask.sum(1).tolist())
    _check_known_words(model, texts, batch, role)
    return batch


def _check_known_words(model: Any, texts: list[str], batch: Tokenized, role: str) -> None:
    """Warn about prompts with words a word-level vocabulary does not have: the model reads its
    unknown token in their place, not the prompt as written (a warning, not an error: that is
    the model's defined behaviour, and control prompts are sometimes chosen to be foreign)."""
    tok = getattr(model, "tokenizer", None)
    unk = getattr(tok, "unk_token_id", None)
    if unk is None or unk in {getattr(tok, k, None) for k in ("bos_token_id", "eos_token_id", "pad_token_id")}:
        return  # byte-level vocabularies spell every text; an unk shared with BOS/EOS is not a marker
    hits = ((batch.tokens == unk) & batch.attention_mask.bool()).sum(1).tolist()
    unk_text = str(getattr(tok, "unk_token", ""))
    for i, n in enumerate(hits):
        written = texts[i].count(unk_text) if unk_text else 0  # the unknown token typed on purpose
        if n > written:
            warnings.warn(f"{role}: prompt {i} ({texts[i][:60]!r}) has {n} word(s) outside the model's vocabulary; "
                          f"the model reads {unk_text!r} in their place. Use words the tokenizer knows",
                          TlInterpWarning, stacklevel=3)
            return


def by_length(batch: Tokenized) -> list[tuple[list[int], Tokenized]]:
    """The batch's rows grouped by real length, each group unpadded: ``[(row indices, batch)]``.

    Unpadded groups let the engine start passes at the first edited position (a steering
    vector added at the last token then costs one position per pass).

    Example:
        >>> import torch
        >>> b = Tokenized(torch.tensor([[1, 2, 0], [3, 4, 5]]), torch.tensor([[1, 1, 0], [1, 1, 1]]),
        ...               torch.tensor([1, 2]), [["a", "b", "-"], ["c", "d", "e"]])
        >>> [(rows, g.tokens.tolist()) for rows, g in by_length(b)]
        [([0], [[1, 2]]), ([1], [[3, 4, 5]])]
    """
    lengths = batch.attention_mask.sum(1).tolist()
    first = real_bounds(batch.attention_mask)[0].tolist()
    groups: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        groups.setdefault(int(n), []).append(i)
    out = []
    for n, rows in sorted(groups.items()):
        tokens = torch.stack([batch.tokens[i, first[i]:first[i] + n] for i in rows])
        strs = [batch.str_tokens[i][first[i]:first[i] + n] for i in rows]
        out.append((rows, Tokenized(tokens, torch.ones_like(tokens), torch.full((len(rows),), n - 1,
                                                                                 device=tokens.device), strs)))
    return out


def paired_batches(model: Any, clean: Inputs, corrupted: Inputs,
                   attention_mask: Tensor | None = None) -> tuple[Tokenized, Tokenized]:
    """Both runs' checked batches, aligned position by position (patching, path patching and
    edge studies move activations between them, so each row's positions must line up).

    Example:
        >>> import torch
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> paired_batches(HookedTransformer(cfg), torch.tensor([[1, 2, 3]]), torch.tensor([[1, 2]]))
        Traceback (most recent call last):
        ...
        tl_interp.errors.ShapeError: clean and corrupted inputs must have the same shape (batch, pos) so positions line up; got clean (1, 3) and corrupted (1, 2)
    """
    clean_b = as_batch(model, clean, attention_mask=attention_mask, role="clean")
    corrupt_b = as_batch(model, corrupted, attention_mask=attention_mask, role="corrupted")
    if clean_b.shape != corrupt_b.shape:
        raise ShapeError(f"clean and corrupted inputs must have the same shape (batch, pos) so positions line up; got "
                         f"clean {clean_b.shape} and corrupted {corrupt_b.shape}")
    if not torch.equal(clean_b.attention_mask, corrupt_b.attention_mask):
        rows = (clean_b.attention_mask != corrupt_b.attention_mask).any(1).nonzero().flatten().tolist()
        raise ShapeError(f"clean and corrupted prompts are padded differently in rows {rows}; patching needs prompts "
                         "of equal token length, row by row")
    return clean_b, corrupt_b
