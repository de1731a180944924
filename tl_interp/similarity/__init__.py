"""Representation similarity, as ``ti.similarity``: compare activations of the same items.

Every metric takes X ``(n, d1)`` and Y ``(n, d2)`` (numpy arrays or torch tensors, rows paired:
the same words or prompts in the same order), computes in float64 and returns a float.

- kernels: ``cka`` (linear / RBF, biased / debiased; Kornblith et al. 2019);
- CCA: ``svcca`` (Raghu et al. 2017), ``pwcca`` (Morcos et al. 2018);
- shape: ``procrustes`` (similarity in [0, 1]), ``procrustes_distance`` (angular / euclidean);
- geometry of items: ``rsa`` (RDM correlation), ``mutual_knn`` (+ ``knn_chance``);
- sets: ``jaccard``, ``jaccard_topk`` (e.g. top SAE features);
- units: ``match_units`` (pair neurons / features across models by correlation);
- feature spaces: ``feature_spaces`` (two SAEs: features paired by activation correlation, decoder
  directions compared against random pairings; ``paired_jaccard`` of their activity);
- ``compare``: several metrics with random-pairing nulls, p-values and bootstrap intervals.

Each metric registers a vectorised permutation null with ``ti.stats.permutation_test``, so
``ti.stats.permutation_test(ti.similarity.cka, X, Y)`` reorders Gram matrices in batches
instead of recomputing CKA 10,000 times.

Example:
    >>> import torch
    >>> import tl_interp as ti
    >>> X = torch.randn(60, 8, generator=torch.Generator().manual_seed(0))
    >>> res = ti.stats.permutation_test(ti.similarity.cka, X, X ** 3, n_permutations=999)
    >>> res.vectorized, float(res.p_value)
    (True, 0.001)
"""

from tl_interp.similarity._cca import pwcca, svcca
from tl_interp.similarity._compare import METRICS, SimilarityResult, compare
from tl_interp.similarity._features import FeatureSpaces, feature_spaces, paired_jaccard
from tl_interp.similarity._kernels import cka
from tl_interp.similarity._match import UnitMatch, match_units
from tl_interp.similarity._neighbors import jaccard, jaccard_topk, knn_chance, mutual_knn
from tl_interp.similarity._procrustes import procrustes, procrustes_distance
from tl_interp.similarity._rsa import rdm, rsa

__all__ = [
    "cka",
    "svcca",
    "pwcca",
    "procrustes",
    "procrustes_distance",
    "rsa",
    "rdm",
    "mutual_knn",
    "knn_chance",
    "jaccard",
    "jaccard_topk",
    "match_units",
    "UnitMatch",
    "feature_spaces",
    "FeatureSpaces",
    "paired_jaccard",
    "compare",
    "SimilarityResult",
    "METRICS",
]
