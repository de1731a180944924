"""Representation geometry, as ``ti.geometry``: activations in, typed results out.

States come from ``ti.collect`` (masks honoured); statistics from ``ti.stats``.

- ``paired(A, B, score=...)``: shift vs rotation fits of paired states, per-pair cosines and
  angles, correlation with an external score, PCA of the differences, all against
  re-paired baselines (seed 000). The fit statistics (``shift_residual``,
  ``rotation_residual``, ``shift_rotation_residual``, ``difference_pca``) and correlations
  (``pearson``, ``spearman``, ``kendall``, ``correlate``) are public and have vectorised
  permutation nulls;
- ``layer_angles(states, positions=...)`` + ``angle_inputs(model, prompts, token)``: angles
  between consecutive layers at target vs other tokens vs a shuffled baseline, corrected
  paired t-tests per layer (seed 004);
- subspaces: ``project``, ``variance_explained``, ``spectrum``, ``low_rank`` and
  ``subspace_ablation`` (``hooks.project_out`` per subspace, against random subspaces; seed 001);
- ``cluster_by_subspace(W, bases)``: units (neurons) grouped by the subspace their weights read;
  ``logit_fraction(logits, forms)``: the share of the logits hypothesised forms (e.g. trace
  logits) explain; ``optimal_weights(forms, labels)``: their lowest-loss weighting (seed 001).

Example:
    >>> import torch
    >>> from tl_interp import geometry
    >>> X = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    >>> geometry.variance_explained(X, torch.eye(4))
    1.0
"""

from tl_interp.geometry._ablation import SubspaceAblation, subspace_ablation
from tl_interp.geometry._angles import COMPARISONS, AngleInputs, LayerAngles, angle_inputs, layer_angles
from tl_interp.geometry._clusters import SubspaceClusters, cluster_by_subspace
from tl_interp.geometry._correlation import CORRELATIONS, correlate, kendall, pearson, spearman
from tl_interp.geometry._fits import (
    difference_pca,
    procrustes_rotation,
    rotation_residual,
    shift_residual,
    shift_rotation_residual,
)
from tl_interp.geometry._logit_forms import FormWeights, LogitForms, logit_fraction, optimal_weights
from tl_interp.geometry._paired import PairedGeometry, paired
from tl_interp.geometry._subspace import Spectrum, low_rank, project, spectrum, variance_explained

__all__ = [
    "paired",
    "PairedGeometry",
    "shift_residual",
    "rotation_residual",
    "shift_rotation_residual",
    "difference_pca",
    "procrustes_rotation",
    "correlate",
    "pearson",
    "spearman",
    "kendall",
    "CORRELATIONS",
    "layer_angles",
    "LayerAngles",
    "angle_inputs",
    "AngleInputs",
    "COMPARISONS",
    "project",
    "variance_explained",
    "spectrum",
    "Spectrum",
    "low_rank",
    "subspace_ablation",
    "SubspaceAblation",
    "cluster_by_subspace",
    "SubspaceClusters",
    "logit_fraction",
    "LogitForms",
    "optimal_weights",
    "FormWeights",
]
