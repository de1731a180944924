"""Activation patching studies: exact sweeps (and attribution patching), path patching, as ``ti.patching``."""

from tl_interp.patching._attribution import attribution
from tl_interp.patching._paths import paths
from tl_interp.patching._result import PatchingResult
from tl_interp.patching._sweep import sweep

__all__ = ["sweep", "attribution", "paths", "PatchingResult"]
