"""Hook factories: every operation tl_interp does to a model, each returning an Intervention.

Selections are shared by all factories: ``positions`` (int, slice, list, boolean mask,
per-row index tensor; negative indices allowed), ``heads`` (head-indexed sites; k/v count
key-value heads on GQA models), ``neurons`` (feature axis, e.g. mlp pre/post), ``rows``
(batch rows).
"""

from tl_interp.hooks._ablate import mean_ablate, resample_ablate, zero_ablate
from tl_interp.hooks._cache import ActivationStore, CacheIntervention, cache
from tl_interp.hooks._patch import patch
from tl_interp.hooks._path import path_input, path_projection
from tl_interp.hooks._project import orthonormal_basis, project_onto, project_out, set_component
from tl_interp.hooks._sae import (
    FeatureEdit,
    ablate_features,
    add_features,
    clamp_features,
    sae_splice,
    scale_features,
)
from tl_interp.hooks._select import Selection
from tl_interp.hooks._steer import add, scale

__all__ = [
    "cache",
    "zero_ablate",
    "mean_ablate",
    "resample_ablate",
    "patch",
    "path_input",
    "path_projection",
    "add",
    "scale",
    "project_out",
    "project_onto",
    "set_component",
    "sae_splice",
    "FeatureEdit",
    "ablate_features",
    "clamp_features",
    "scale_features",
    "add_features",
    "orthonormal_basis",
    "Selection",
    "CacheIntervention",
    "ActivationStore",
]
