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

from tl_interp import errors, hooks, metrics
from tl_interp.errors import (
    HookNameError,
    InputError,
    OptionError,
    SelectionError,
    ShapeError,
    TlInterpError,
)
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
    "TlInterpError",
    "HookNameError",
    "ShapeError",
    "SelectionError",
    "OptionError",
    "InputError",
    "metrics",
    "models",
    "patching",
    "ablation",
    "steering",
    "results",
    "viz",
    "stats",
    "similarity",
    "geometry",
    "weights",
    "collect",
    "distributed",
    "circuits",
    "__version__",
]


_LAZY = {
    "models": "tl_interp.models",
    "patching": "tl_interp.patching",
    "ablation": "tl_interp.ablation",
    "steering": "tl_interp.steering",
    "results": "tl_interp.results",
    "viz": "tl_interp.viz",
    "stats": "tl_interp.stats",
    "similarity": "tl_interp.similarity",
    "geometry": "tl_interp.geometry",
    "weights": "tl_interp.weights",
    "collect": "tl_interp.engine.collect:collect",  # module:attribute -> the function itself
    "distributed": "tl_interp.distributed",
    "circuits": "tl_interp.circuits",
}


def __getattr__(name: str):
    # Heavy modules (transformers, sae_lens, plotly) load only when first used.
    if name in _LAZY:
        import importlib

        module, _, attribute = _LAZY[name].partition(":")
        loaded = importlib.import_module(module)
        return getattr(loaded, attribute) if attribute else loaded
    raise AttributeError(f"module 'tl_interp' has no attribute {name!r}")
