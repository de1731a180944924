"""A model's weights as TransformerLens's weight processing leaves them (layer norm folded).

Static weight analyses read vectors *through* the normalisation that follows them: a neuron's
output vector reaches the unembedding after ``ln_final``, its input vector sees the residual
after ``ln2``. ``fold(model)`` gives the weights exactly as TransformerLens's
``load_and_process_state_dict`` (``from_pretrained``'s default) leaves them, for a model loaded
either way, so an analysis gives the same answer whatever state the model is in:

- ``fold_ln`` multiplies each norm's gain into the matrix that reads it (``W_in``, ``W_gate``,
  ``W_U``) and, for LayerNorm, centres the reading matrix over ``d_model`` (``W_in`` and
  ``W_U``, not ``W_gate``, as ``ProcessWeights._fold_mlp_layer_norm`` does): the norm's output
  has mean zero, so that component is never read;
- ``center_writing_weights`` (LayerNorm only) removes the mean over ``d_model`` from ``W_E``
  and ``W_out``, which the next norm would subtract anyway;
- ``center_unembed`` removes the mean over the vocabulary from ``W_U`` (any norm): softmax is
  shift-invariant, so log-probabilities are unchanged.

Each centring is idempotent, so it is applied whatever flags the model was loaded with, and a
gain is multiplied in only when the model still has one (``normalization_type`` "LN"/"RMS";
"LNPre"/"RMSPre" means TransformerLens folded it). Provenance records which case it was.

Not folded (as in TransformerLens): the norm's division by each input's scale, a positive
number per token that rescales a vector but never changes its direction; biases, which no
reading here uses (``fold_value_biases`` moves biases only).
"""

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from tl_interp._checks import check_layer, checked
from tl_interp.errors import UnsupportedError
from tl_interp.models._adapter import adapt

__all__ = ["FoldedWeights", "fold", "token_labels"]

_FOLDED = ("LNPre", "RMSPre")
_LAYER_NORMS = ("LN", "LNPre")


@dataclass(frozen=True, eq=False)
class FoldedWeights:
    """Effective (layer-norm-folded) weights of one HookedTransformer, in float64.

    Attributes:
        model: the model (its weights are read, never changed).
        normalization: the model's ``cfg.normalization_type`` (``"LNPre"``, ``"RMS"``, ``None``...).
        processed: the weights were already folded when the model was loaded.
    """

    model: Any
    normalization: str | None
    processed: bool

    @property
    def folded_here(self) -> bool:
        """Whether norm gains are folded by this object (the model was loaded unprocessed)."""
        return self.normalization in ("LN", "RMS")

    def _centre(self, vectors: Tensor, dim: int = -1) -> Tensor:
        # LayerNorm subtracts each input's mean over d_model: only the centred part of a vector
        # written into the residual stream reaches the next matrix, and a matrix reading the
        # norm's (mean-zero) output never sees its own mean over d_model. Idempotent, so a model
        # TransformerLens already centred reads the same.
        if self.normalization in _LAYER_NORMS:
            return vectors - vectors.mean(dim, keepdim=True)
        return vectors

    def _gain(self, norm: Any) -> Tensor | None:
        return norm.w.detach().double() if self.folded_here else None

    def _layer(self, layer: int) -> Any:
        n = self.model.cfg.n_layers
        check_layer(layer, n)
        if self.model.cfg.attn_only:
            raise UnsupportedError(f"{adapt(self.model).model_id} is attention-only: it has no MLP weights")
        return self.model.blocks[layer]

    def embed(self) -> Tensor:
        """``(d_vocab, d_model)`` token embeddings as the first norm sees them (centred for LayerNorm)."""
        return self._centre(self.model.W_E.detach().double())

    def unembed(self) -> Tensor:
        """``(d_model, d_vocab)`` unembedding: ``ln_final``'s gain folded in, centred as TransformerLens does.

        Centred over ``d_model`` for LayerNorm (``fold_ln``) and over the vocabulary for every
        model (``center_unembed``).
        """
        w_u = self.model.W_U.detach().double()
        gain = self._gain(self.model.ln_final)
        w_u = self._centre(w_u if gain is None else gain[:, None] * w_u, dim=0)
        return w_u - w_u.mean(-1, keepdim=True)

    def mlp_in(self, layer: int, *, gate: bool = False) -> Tensor:
        """``(d_model, d_mlp)`` input (or gate) weights of a layer's MLP with ``ln2``'s gain folded in.

        ``W_in`` is centred over ``d_model`` for LayerNorm; ``W_gate`` is not (as in TransformerLens).
        """
        block = self._layer(layer)
        if gate and not self.model.cfg.gated_mlp:
            raise UnsupportedError(f"{adapt(self.model).model_id} has no gated MLP; use kind='in'")
        w = (block.mlp.W_gate if gate else block.mlp.W_in).detach().double()
        gain = self._gain(block.ln2)
        w = w if gain is None else gain[:, None] * w
        return w if gate else self._centre(w, dim=0)

    def mlp_out(self, layer: int) -> Tensor:
        """``(d_mlp, d_model)`` output weights of a layer's MLP (centred for LayerNorm)."""
        return self._centre(self._layer(layer).mlp.W_out.detach().double())

    def settings(self) -> dict[str, Any]:
        """What provenance records: whether the weights were processed, and how they were read."""
        return {"weights_processed": self.processed, "normalization_type": self.normalization,
                "folded_by_tl_interp": self.folded_here,
                "reading": "as TransformerLens's fold_ln + center_writing_weights + center_unembed"}


@checked
def fold(model: Any) -> FoldedWeights:
    """The layer-norm-folded weights of a HookedTransformer (processed or not).

    Args:
        model: a ``HookedTransformer`` (or ``HookedSAETransformer``).

    Returns:
        ``FoldedWeights``; its ``processed`` says whether the model was loaded with folded weights.

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16, normalization_type="LN")
        >>> fw = fold(HookedTransformer(cfg))
        >>> fw.processed, fw.folded_here, tuple(fw.mlp_out(0).shape)
        (False, True, (16, 8))
    """
    from transformer_lens import HookedTransformer

    if not isinstance(model, HookedTransformer):
        raise UnsupportedError(f"ti.weights reads HookedTransformer weights (W_E, W_in, W_out, W_U); got "
                               f"{type(model).__name__}. Load the model as a HookedTransformer "
                               "(ti.models.load does for supported checkpoints)")
    norm = model.cfg.normalization_type
    return FoldedWeights(model, norm, processed=norm in _FOLDED)


@checked
def token_labels(model: Any, ids: Tensor | list[int] | None = None) -> tuple[str, ...]:
    """Token strings (spaces kept) for ``ids`` or the whole vocabulary; ``tok{i}`` without a tokenizer.

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> token_labels(HookedTransformer(cfg), [0, 3])
        ('tok0', 'tok3')
    """
    tok = getattr(model, "tokenizer", None)
    vocab = model.cfg.d_vocab
    chosen = list(range(vocab)) if ids is None else [int(i) for i in ids]
    if tok is None:
        return tuple(f"tok{i}" for i in chosen)
    return tuple(tok.batch_decode([[i] for i in chosen], clean_up_tokenization_spaces=False))

