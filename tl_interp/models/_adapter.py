"""One small view of every model family: sizes, hook names and padding-aware tokenisation.

``adapt(model)`` answers the questions the rest of tl_interp asks of a model -- how many
layers, heads (and key/value heads under grouped-query attention), how wide, which hook
points exist, what to call it in provenance -- for ``HookedTransformer``,
``sae_lens.HookedSAETransformer``, ``TransformerBridge`` and any custom
``HookedRootModule``. Its ``tokenize`` pads explicitly: every prompt is tokenised on its
own (exactly as ``model.to_tokens(prompt)`` would), then padded, so a batched row equals
the unbatched tokens on its non-pad part by construction, and ``last_index`` says where each
row's last real token is, whichever side the padding is on.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

import torch
from jaxtyping import Int
from torch import Tensor
from tl_interp import compat
from tl_interp._checks import checked
from tl_interp._types import Tokens
from tl_interp.errors import InputError, ModelLoadError, ShapeError

__all__ = ["adapt", "ModelAdapter", "Tokenized", "Family"]

Family: TypeAlias = Literal["hooked_transformer", "hooked_sae_transformer", "bridge", "custom"]
_SIZE_FIELDS = ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "d_vocab")


@checked
@dataclass(frozen=True)
class Tokenized:
    """A padded batch of prompts with its attention mask.

    Attributes:
        tokens: Token ids, padded with the tokenizer's pad id.
        attention_mask: 1 on real tokens, 0 on padding.
        last_index: Position of each row's last real token (the "last token" of a prompt).
        str_tokens: One string per position of each row, aligned with ``tokens`` (padding
            positions hold the pad token's string; select with ``attention_mask``).
    """

    tokens: Tokens
    attention_mask: Int[Tensor, "batch pos"]
    last_index: Int[Tensor, " batch"]
    str_tokens: list[list[str]]

    @property
    def padded(self) -> bool:
        """Whether any row has padding."""
        return not bool(self.attention_mask.bool().all())

    @property
    def shape(self) -> tuple[int, int]:
        """``(batch, pos)``."""
        return (int(self.tokens.shape[0]), int(self.tokens.shape[1]))

    def __len__(self) -> int:
        return int(self.tokens.shape[0])

    def rows(self, index: "slice | list[int]") -> "Tokenized":
        """The batch of the given rows (same width, same padding)."""
        idx = list(range(len(self)))[index] if isinstance(index, slice) else list(index)
        t = torch.as_tensor(idx, dtype=torch.long, device=self.tokens.device)
        return Tokenized(self.tokens[t], self.attention_mask[t], self.last_index[t], [self.str_tokens[i] for i in idx])


def _family(model: Any) -> Family:
    # Matched by name so that adapting a model never imports sae_lens (slow) by itself.
    if any(cls.__name__ == "HookedSAETransformer" for cls in type(model).__mro__):
        return "hooked_sae_transformer"
    if compat.is_bridge(model):
        return "bridge"
    if compat.is_hooked_transformer(model):
        return "hooked_transformer"
    if isinstance(model, compat.tl.hooked_root_module()):
        return "custom"
    raise ModelLoadError(
        f"adapt: {type(model).__name__} is not a model tl_interp can hook; expected a "
        "HookedTransformer, HookedSAETransformer, TransformerBridge or a "
        "transformer_lens.hook_points.HookedRootModule"
    )


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _device(model: Any) -> torch.device:
    cfg_device = getattr(getattr(model, "cfg", None), "device", None)
    if cfg_device is not None:
        return torch.device(cfg_device)
    param = next(iter(model.parameters()), None)
    return param.device if param is not None else torch.device("cpu")


@dataclass(frozen=True)
class ModelAdapter:
    """Sizes, hook names and tokenisation of one model, whatever its family.

    Sizes are ``None`` when a custom module does not declare them. ``n_key_value_heads``
    equals ``n_heads`` unless the model uses grouped-query attention.
    """

    model: Any = field(repr=False, compare=False)
    family: Family
    n_layers: int | None
    n_heads: int | None
    n_key_value_heads: int | None
    d_model: int | None
    d_head: int | None
    d_mlp: int | None
    d_vocab: int | None
    hook_names: tuple[str, ...] = field(repr=False)
    model_id: str

    @property
    def tokenizer(self) -> Any | None:
        """The model's transformers tokenizer, or ``None`` if it has none."""
        return getattr(self.model, "tokenizer", None)

    def _encode(self, text: str, prepend_bos: bool | None) -> list[int]:
        if self.family != "custom":
            # never truncate silently: callers check lengths against the context (engine.inputs)
            return self.model.to_tokens(text, prepend_bos=prepend_bos, move_to_device=False,
                                        truncate=False)[0].tolist()
        tok = self.tokenizer
        ids = list(tok(text, add_special_tokens=False)["input_ids"])
        if prepend_bos is None:
            prepend_bos = bool(getattr(getattr(self.model, "cfg", None), "default_prepend_bos", False))
        if prepend_bos:
            if tok.bos_token_id is None:
                raise ModelLoadError(
                    f"tokenize: {self.model_id}'s tokenizer has no BOS token; pass prepend_bos=False"
                )
            ids = [tok.bos_token_id, *ids]
        return ids

    def tokenize(
        self,
        texts: str | Sequence[str],
        *,
        prepend_bos: bool | None = None,
        padding_side: Literal["left", "right"] = "right",
    ) -> Tokenized:
        """Tokenise prompts into a padded batch with an attention mask.

        Args:
            texts: One prompt or several (strings; ``tl_interp.engine.inputs.as_batch`` takes
                every input form).
            prepend_bos: Prepend the BOS token; ``None`` uses the model's default
                (``cfg.default_prepend_bos``; ``False`` for custom modules without a cfg).
            padding_side: Where shorter prompts are padded.

        Returns:
            ``Tokenized`` on the model's device; row ``i`` holds ``prompts[i]``.

        Raises:
            ModelLoadError: the model has no tokenizer.
            ShapeError: no prompts, or a prompt that tokenises to nothing.

        Example:
            >>> import tempfile
            >>> from tl_interp.models import load, make_tiny_hf_dir
            >>> ad = adapt(load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu"))
            >>> batch = ad.tokenize(["the cat sat", "the dog"], padding_side="left")
            >>> batch.last_index.tolist(), batch.attention_mask.tolist()
            ([3, 3], [[1, 1, 1, 1], [0, 1, 1, 1]])
        """
        if self.tokenizer is None:
            raise ModelLoadError(
                f"tokenize: {self.model_id} ({self.family}) has no tokenizer; set "
                "model.tokenizer to a transformers tokenizer, or pass token ids directly"
            )
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            raise ShapeError("tokenize: got an empty list of prompts; pass at least one string")
        rows = [self._encode(text, prepend_bos) for text in texts]
        for i, row in enumerate(rows):
            if not row:
                raise InputError(
                    f"tokenize: prompt {i} ({texts[i]!r}) has no tokens; use a non-empty prompt "
                    "or prepend_bos=True"
                )
        tok = self.tokenizer
        pad_id = next((t for t in (tok.pad_token_id, tok.eos_token_id) if t is not None), 0)
        width = max(len(row) for row in rows)
        tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            start = width - len(row) if padding_side == "left" else 0
            tokens[i, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
            mask[i, start : start + len(row)] = 1
        last = torch.tensor(
            [width - 1 if padding_side == "left" else len(row) - 1 for row in rows], dtype=torch.long
        )
        str_tokens = [
            tok.batch_decode([[t] for t in row], clean_up_tokenization_spaces=False)
            for row in tokens.tolist()
        ]
        device = _device(self.model)
        return Tokenized(tokens.to(device), mask.to(device), last.to(device), str_tokens)


@checked
def adapt(model: Any) -> ModelAdapter:
    """Describe a model for tl_interp: family, sizes, hook names, id and tokenisation.

    Args:
        model: A ``HookedTransformer``, ``sae_lens.HookedSAETransformer``,
            ``TransformerBridge`` or custom ``HookedRootModule``.

    Returns:
        A frozen ``ModelAdapter``.

    Raises:
        ModelLoadError: any other kind of object.

    Example:
        >>> import tempfile
        >>> from tl_interp.models import load, make_tiny_hf_dir
        >>> ad = adapt(load(make_tiny_hf_dir(tempfile.mkdtemp(), "llama"), device="cpu"))
        >>> ad.family in ("hooked_transformer", "bridge"), ad.n_layers, ad.n_heads, ad.n_key_value_heads, ad.d_head
        (True, 2, 4, 2, 16)
    """
    family = _family(model)
    if family == "custom" and not getattr(model, "hook_dict", None):
        model.setup()
    cfg = getattr(model, "cfg", None)
    sizes = {name: _int_or_none(getattr(cfg, name, None)) for name in _SIZE_FIELDS}
    if getattr(cfg, "attn_only", False):  # TL fills d_mlp in even when there is no MLP
        sizes["d_mlp"] = None
    n_kv = _int_or_none(getattr(cfg, "n_key_value_heads", None)) or sizes["n_heads"]
    model_id = getattr(cfg, "model_name", None) or getattr(model, "model_id", None)
    return ModelAdapter(
        model=model,
        family=family,
        n_key_value_heads=n_kv,
        hook_names=tuple(dict.fromkeys(model.hook_dict)),
        model_id=str(model_id or type(model).__name__),
        **sizes,
    )
