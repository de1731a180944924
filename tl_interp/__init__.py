"""tl_interp: a hook-based interpretability toolkit on TransformerLens.

Everything the toolkit does to a model is a TransformerLens hook function; hooks compose
into ``Intervention``s; studies are built from interventions, forward passes and metrics.

Example:
    >>> import tl_interp as ti
    >>> from tl_interp import hooks, site
    >>> print(hooks.zero_ablate(site("z", 1), heads=[3]))
    Intervention (1 hook):
      1. zero-ablate (heads [3]) at blocks.1.attn.hook_z
"""

from tl_interp import errors, hooks
from tl_interp.errors import HookNameError, SelectionError, ShapeError
from tl_interp.intervention import Hook, Intervention
from tl_interp.sites import SITE_KINDS, site

__version__ = "0.1.0"

__all__ = [
    "Intervention",
    "Hook",
    "site",
    "SITE_KINDS",
    "hooks",
    "errors",
    "HookNameError",
    "ShapeError",
    "SelectionError",
    "models",
    "__version__",
]


def __getattr__(name: str):
    # models/ pulls in transformers and sae_lens; import it only when asked for.
    if name == "models":
        import importlib

        return importlib.import_module("tl_interp.models")
    raise AttributeError(f"module 'tl_interp' has no attribute {name!r}")
