"""Typed errors whose messages name the hook, the expected and actual value, and the fix.

Every user-facing mistake in tl_interp surfaces as one of these, raised before any long
work starts. They subclass the built-in exception a caller would naturally catch
(``KeyError``/``ValueError``/``IndexError``), so existing ``except`` clauses keep working.
"""

__all__ = [
    "TLInterpError",
    "HookNameError",
    "ShapeError",
    "SelectionError",
    "ModelLoadError",
]


class TLInterpError(Exception):
    """Base class of every error tl_interp raises on purpose."""


class HookNameError(TLInterpError, KeyError):
    """A hook name (or name filter) that the model does not have.

    Example:
        >>> raise HookNameError("no hook point 'blocks.0.hook_resid_pr'")
        Traceback (most recent call last):
        ...
        tl_interp.errors.HookNameError: no hook point 'blocks.0.hook_resid_pr'
    """

    def __str__(self) -> str:  # KeyError would repr() the message; show it as written
        return str(self.args[0]) if self.args else ""


class ShapeError(TLInterpError, ValueError):
    """A tensor whose shape does not fit the site it is applied at."""


class SelectionError(TLInterpError, IndexError):
    """A position / head / neuron / row selection that is out of range or malformed."""


class ModelLoadError(TLInterpError, RuntimeError):
    """A model or checkpoint that cannot be loaded, with the reason and what to do."""
