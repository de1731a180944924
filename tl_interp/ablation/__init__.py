"""Ablation studies: knock out units one at a time, as ``ti.ablation``."""

from tl_interp.ablation._features import feature_ablation
from tl_interp.ablation._result import AblationResult
from tl_interp.ablation._scan import scan

__all__ = ["scan", "feature_ablation", "AblationResult"]
