"""Weight vectors with labels, read from a model, and the simple statistics of them.

``Vectors`` is a matrix whose rows are the vectors under study (token embeddings, unembedding
directions, a layer's MLP input or output weights), a label per row (token strings, neuron
names ``L3N17``) and the provenance of the reading (model, whether its weights were
processed). ``embedding``, ``unembedding``, ``mlp_in`` and ``mlp_out`` read them through
``fold`` (layer norm folded). ``norms``, ``orthogonalize`` and ``kurtosis`` work on them or on
any tensor, in float64.
"""

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError, SelectionError, ShapeError
from tl_interp.hooks import orthonormal_basis
from tl_interp.models._adapter import adapt
from tl_interp.results import Provenance, Result
from tl_interp.stats._inputs import centre, check_finite, unit_scale
from tl_interp.weights._fold import fold, token_labels

__all__ = ["Vectors", "as_vectors", "embedding", "unembedding", "mlp_in", "mlp_out", "norms", "orthogonalize",
           "kurtosis"]


@dataclass(frozen=True, eq=False)
class Vectors:
    """Rows of ``matrix`` (float64), a label per row, and where they came from.

    Example:
        >>> import torch
        >>> v = as_vectors(torch.eye(3), labels=["a", "b", "c"])
        >>> v.select(["c", "a"]).labels
        ('c', 'a')
    """

    matrix: Tensor
    labels: tuple[str, ...]
    name: str = "vectors"
    model_id: str = "tensor"
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.matrix.ndim != 2:
            raise ShapeError(f"{self.name}: vectors are the rows of a 2-D matrix, got shape {tuple(self.matrix.shape)}")
        if len(self.labels) != self.matrix.shape[0]:
            raise ShapeError(f"{self.name}: {len(self.labels)} labels for {self.matrix.shape[0]} vectors")
        if not bool(torch.isfinite(self.matrix).all()):
            raise InputError(f"{self.name}: the vectors hold NaN or Inf")

    def __len__(self) -> int:
        return int(self.matrix.shape[0])

    def index(self, items: Sequence[int | str] | Tensor) -> list[int]:
        """Row indices of ``items`` (indices or labels)."""
        if isinstance(items, Tensor):
            items = items.tolist()
        where = {label: i for i, label in reversed(list(enumerate(self.labels)))}
        out = []
        for item in items:
            if isinstance(item, str):
                if item not in where:
                    raise SelectionError(f"{self.name}: no vector labelled {item!r} (labels look like "
                                         f"{list(self.labels[:3])})")
                out.append(where[item])
            elif isinstance(item, bool) or not -len(self) <= int(item) < len(self):
                raise SelectionError(f"{self.name}: row {item!r} is out of range for {len(self)} vectors")
            else:
                out.append(int(item) % len(self))
        return out

    def select(self, items: Sequence[int | str] | Tensor) -> "Vectors":
        """The vectors ``items`` (indices or labels), in that order."""
        rows = self.index(items)
        return Vectors(self.matrix[rows], tuple(self.labels[i] for i in rows), self.name, self.model_id,
                       self.settings)

    def provenance(self, **settings: Any) -> Provenance:
        return Provenance.make(self.model_id, settings={"vectors": self.name, **self.settings, **settings})


@checked
def as_vectors(W: "Tensor | Vectors", *, labels: Sequence[str] | None = None, name: str = "vectors") -> Vectors:
    """``W`` as ``Vectors`` (rows, labels ``"0", "1", ...`` unless given); ``Vectors`` pass through.

    Args:
        W: a float tensor ``(n, d)`` whose rows are the vectors, or ``Vectors``.
        labels: a label per row (replaces a ``Vectors``' own labels when given).
        name: what the vectors are, for messages and provenance.

    Returns:
        ``Vectors`` with a float64 CPU matrix.

    Example:
        >>> import torch
        >>> as_vectors(torch.ones(2, 3)).labels
        ('0', '1')
    """
    if isinstance(W, Vectors):
        if labels is not None:
            return Vectors(W.matrix, tuple(labels), W.name, W.model_id, W.settings)
        return W
    if not isinstance(W, Tensor) or W.dtype.is_complex or not W.dtype.is_floating_point:
        raise InputError(f"{name}: expected a float tensor of vectors (rows), got "
                         f"{getattr(W, 'dtype', type(W).__name__)}")
    matrix = W.detach().double().cpu()
    return Vectors(matrix, tuple(labels) if labels is not None else tuple(str(i) for i in range(len(matrix))), name)


def _neurons(layer: int, n: int) -> tuple[str, ...]:
    return tuple(f"L{layer}N{i}" for i in range(n))


def _from_model(model: Any, matrix: Tensor, labels: tuple[str, ...], name: str) -> Vectors:
    return Vectors(matrix.cpu(), labels, name, adapt(model).model_id, fold(model).settings())


@checked
def embedding(model: Any) -> Vectors:
    """Token embeddings ``W_E`` (one row per token, centred for LayerNorm models).

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> len(embedding(HookedTransformer(cfg)))
        5
    """
    return _from_model(model, fold(model).embed(), token_labels(model), "W_E")


@checked
def unembedding(model: Any) -> Vectors:
    """Unembedding directions ``W_U[:, t]`` (one row per token) as TransformerLens's processing leaves them.

    ``ln_final``'s gain folded in, centred over the vocabulary (``center_unembed``) and, for
    LayerNorm, over ``d_model``: the same whether the model was loaded processed or not.

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> tuple(unembedding(HookedTransformer(cfg)).matrix.shape)
        (5, 8)
    """
    return _from_model(model, fold(model).unembed().T, token_labels(model), "W_U")


@checked
def mlp_in(model: Any, layer: int, *, gate: bool = False) -> Vectors:
    """A layer's MLP input (or gate) weights, one row per neuron (``ln2``'s gain folded in).

    For LayerNorm models ``W_in`` is centred over ``d_model`` (as ``fold_ln`` leaves it; the gate
    is not, as in TransformerLens).

    Args:
        model: a HookedTransformer.
        layer: the block.
        gate: the gate weights ``W_gate`` of a gated MLP instead of ``W_in``.

    Returns:
        ``Vectors`` ``(d_mlp, d_model)`` labelled ``L{layer}N{i}``.

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> mlp_in(HookedTransformer(cfg), 0).labels[:2]
        ('L0N0', 'L0N1')
    """
    w = fold(model).mlp_in(layer, gate=gate).T
    return _from_model(model, w, _neurons(layer, w.shape[0]), f"W_{'gate' if gate else 'in'}[{layer}]")


@checked
def mlp_out(model: Any, layer: int) -> Vectors:
    """A layer's MLP output weights ``W_out``, one row per neuron (centred for LayerNorm).

    Example:
        >>> from transformer_lens import HookedTransformer, HookedTransformerConfig
        >>> cfg = HookedTransformerConfig(n_layers=1, d_model=8, n_heads=2, d_head=4, n_ctx=4,
        ...                               d_vocab=5, act_fn="relu", d_mlp=16)
        >>> mlp_out(HookedTransformer(cfg), 0).settings["weights_processed"]
        False
    """
    w = fold(model).mlp_out(layer)
    return _from_model(model, w, _neurons(layer, w.shape[0]), f"W_out[{layer}]")


@checked
def norms(W: Tensor | Vectors, *, labels: Sequence[str] | None = None) -> Result:
    """The L2 norm of every vector (row), as a labelled ``Result`` (``.figure()`` draws bars).

    Args:
        W: vectors as rows (a tensor or ``Vectors``).
        labels: a label per row.

    Returns:
        ``Result`` with values ``(n,)`` on axis ``"vector"``.

    Example:
        >>> import torch
        >>> norms(torch.tensor([[3.0, 4.0], [0.0, 1.0]])).values.tolist()
        [5.0, 1.0]
    """
    v = as_vectors(W, labels=labels)
    return Result(v.matrix.norm(dim=1), ("vector",), "l2_norm", v.provenance(), {"vector": v.labels})


@checked
def orthogonalize(v: Float[Tensor, " d"], against: Float[Tensor, " d"] | Float[Tensor, "k d"]) -> Float[Tensor, " d"]:
    """``v`` minus its projection onto the span of ``against`` (one direction or ``k`` rows), float64.

    The "right, not left" direction of a pair of unembedding vectors: what of ``v`` is left once
    everything it shares with ``against`` is removed (Gram-Schmidt against an orthonormal basis).

    Args:
        v: the direction ``(d,)``.
        against: one direction ``(d,)`` or ``k`` directions ``(k, d)``.

    Returns:
        ``(d,)`` float64, orthogonal to every row of ``against``.

    Example:
        >>> import torch
        >>> orthogonalize(torch.tensor([1.0, 1.0]), torch.tensor([2.0, 0.0])).tolist()
        [0.0, 1.0]
    """
    if v.shape[-1] != against.shape[-1]:
        raise ShapeError(f"orthogonalize: v has {v.shape[-1]} entries, against has {against.shape[-1]}")
    q = orthonormal_basis(against)
    x = check_finite(v.detach().double(), "orthogonalize: v", "give a finite direction")
    return x - (x @ q.T) @ q


@checked
def kurtosis(X: Float[Tensor, "..."], *, dim: int = -1, fisher: bool = True, bias: bool = True) -> Tensor:
    """Kurtosis along ``dim`` (float64), as ``scipy.stats.kurtosis`` computes it.

    Fisher's definition (excess kurtosis: 0 for a normal distribution) unless ``fisher=False``;
    ``bias=False`` applies the small-sample correction (pandas' ``.kurtosis()``). A heavy tail
    (a neuron that writes strongly to a few tokens) shows as a large kurtosis.

    Args:
        X: values; ``dim`` is the axis the kurtosis is taken over.
        dim, fisher, bias: as ``scipy.stats.kurtosis(axis=, fisher=, bias=)``.

    Returns:
        float64 tensor, ``X``'s shape without ``dim``.

    Example:
        >>> import torch
        >>> round(float(kurtosis(torch.tensor([1.0, 2.0, 3.0, 4.0, 10.0]))), 4)
        -0.212
    """
    if not -max(X.ndim, 1) <= dim < max(X.ndim, 1):
        raise SelectionError(f"kurtosis: dim={dim} but X has {X.ndim} axes (shape {tuple(X.shape)}); choose dim in "
                             f"[{-X.ndim}, {X.ndim - 1}], the axis the values to describe lie along")
    x = check_finite(X.detach().double(), "kurtosis: X", "remove or impute them first")
    n = x.shape[dim]
    if n < (4 if not bias else 2):
        raise InputError(f"kurtosis needs at least {4 if not bias else 2} values along dim {dim}, got {n}")
    # m4 / m2^2 is scale-free: compute it at unit scale per slice (exact), so 1e200 can't overflow
    x = unit_scale(x, dim=dim)[0]
    d = unit_scale(centre(x, dim), dim=dim)[0]
    m2, m4 = (d ** 2).mean(dim), (d ** 4).mean(dim)
    g2 = m4 / m2 ** 2
    if not bias:
        g2 = 3.0 + ((n + 1) * (g2 - 3.0) + 6.0) * (n - 1) / ((n - 2) * (n - 3))
    return g2 - 3.0 if fisher else g2
