"""Static weight analyses, as ``ti.weights``: norms, clustered cosines, congruence, top-k tables.

Every reading goes through ``fold(model)``: a HookedTransformer's weights with layer norm folded
the way TransformerLens processes them, whether the model was loaded processed or not, and the
result's provenance says which it was (``settings["weights_processed"]``).

- vectors: ``embedding``, ``unembedding``, ``mlp_in``, ``mlp_out`` -> labelled ``Vectors``;
- ``norms``, ``orthogonalize`` (one direction against others), ``kurtosis`` (as scipy's);
- ``cosine_matrix(W, cluster=True)`` -> ``CosineMatrix`` (``.matrix``, ``.order``, a labelled
  heatmap in dendrogram order), ``cluster_around(W, exemplar)``;
- ``congruence(model, layer, kind="out" | "in" | "gate")`` -> per neuron, per token;
- per-neuron token rankings: ``Congruence.top(k)`` (a ``Ranking``; ``top_k`` / ``TopK`` are retired).

Example:
    >>> import torch
    >>> from tl_interp import weights
    >>> cm = weights.cosine_matrix(torch.eye(3))
    >>> cm.matrix.shape, cm.order.shape
    (torch.Size([3, 3]), torch.Size([3]))
"""

from tl_interp.weights._congruence import Congruence, congruence
from tl_interp.weights._cosine import Cluster, CosineMatrix, cluster_around, cosine_matrix
from tl_interp.weights._fold import FoldedWeights, fold, token_labels
from tl_interp.weights._topk import TopK, top_k
from tl_interp.weights._vectors import (
    Vectors,
    as_vectors,
    embedding,
    kurtosis,
    mlp_in,
    mlp_out,
    norms,
    orthogonalize,
    unembedding,
)

__all__ = [
    "fold",
    "FoldedWeights",
    "token_labels",
    "Vectors",
    "as_vectors",
    "embedding",
    "unembedding",
    "mlp_in",
    "mlp_out",
    "norms",
    "orthogonalize",
    "kurtosis",
    "cosine_matrix",
    "CosineMatrix",
    "cluster_around",
    "Cluster",
    "congruence",
    "Congruence",
    "top_k",
    "TopK",
]
