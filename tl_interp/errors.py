"""Typed errors whose messages name the hook, the expected and actual value, and the fix.

Every mistake tl_interp can detect surfaces as one of these, raised before any long work
starts. Each class means one thing, and also subclasses the built-in exception a caller
would naturally catch, so existing ``except KeyError`` / ``except ValueError`` clauses keep
working:

=================  ==============  ============================================================
class              also a          means
=================  ==============  ============================================================
HookNameError      KeyError        a hook name, site kind or name filter the model does not
                                   have, or a hook point that exists but never fires
ShapeError         ValueError      a tensor whose shape, rank or width does not fit where it goes
SelectionError     IndexError      a layer / position / head / neuron / row / feature selection,
                                   or a count of items to pick (``k``, ``top_k``, ``n`` of a
                                   top-n), that is out of range, empty or malformed
OptionError        ValueError      an option outside its accepted values (``method=``,
                                   ``direction=``, ``over=``, ``n_boot=0`` ...)
InputError         ValueError      inputs that cannot be used as given: prompts, tokens,
                                   attention masks, metrics, non-finite numbers, text longer
                                   than the context
UnsupportedError   ValueError      a valid request this model or mode cannot honour exactly
ArtifactError      ValueError      a stored file (weights, cache entry, result, vector, card)
                                   that is missing, truncated, corrupt or of another kind
ModelLoadError     RuntimeError    a model or checkpoint that cannot be loaded
TypeCheckError     TypeError       an argument of the wrong type, or a tensor of the wrong
                                   dtype, at a public entry point
=================  ==============  ============================================================

One mistake, one class, whichever function reports it: a layer or count out of range is a
``SelectionError`` everywhere (``_checks.check_layer`` / ``check_count``,
``engine._grid.check_layers``), token ids outside the vocabulary an ``InputError``, a wrong
shape a ``ShapeError`` and a wrong type a ``TypeCheckError`` (``@checked`` turns jaxtyping's
and beartype's own errors into these). Messages name the public entry point a user called
(``ti.hooks.add``), never a private module.

Warnings: ``FastPathWarning`` when the engine falls back to the exact full forward because a
fast path's guard failed; ``TlInterpDeprecationWarning`` for old parameter names.
"""

__all__ = [
    "TlInterpError",
    "TLInterpError",
    "HookNameError",
    "ShapeError",
    "SelectionError",
    "OptionError",
    "InputError",
    "UnsupportedError",
    "ArtifactError",
    "ModelLoadError",
    "TypeCheckError",
    "TlInterpWarning",
    "FastPathWarning",
    "TlInterpDeprecationWarning",
]


class TlInterpError(Exception):
    """Base class of every error tl_interp raises on purpose."""


TLInterpError = TlInterpError  # the earlier spelling


class HookNameError(TlInterpError, KeyError):
    """A hook name (or name filter, or site kind) that the model does not have, or a hook
    point that exists but never fires with the model's configuration.

    Example:
        >>> raise HookNameError("no hook point 'blocks.0.hook_resid_pr'")
        Traceback (most recent call last):
        ...
        tl_interp.errors.HookNameError: no hook point 'blocks.0.hook_resid_pr'
    """

    def __str__(self) -> str:  # KeyError would repr() the message; show it as written
        return str(self.args[0]) if self.args else ""


class ShapeError(TlInterpError, ValueError):
    """A tensor whose shape or width does not fit the site or function it is given to."""


class SelectionError(TlInterpError, IndexError):
    """A layer / position / head / neuron / row / feature selection, or a count of items to pick
    (``k``, ``top_k``), that is out of range or malformed."""


class OptionError(TlInterpError, ValueError):
    """An option whose value is not one of the accepted ones (the message lists them)."""


class InputError(TlInterpError, ValueError):
    """Inputs that cannot be used as given: prompts, token ids, attention masks, metrics,
    non-finite numbers, text longer than the model's context."""


class UnsupportedError(TlInterpError, ValueError):
    """A well-formed request that this model or mode cannot honour exactly (the message says
    what to do instead)."""


class ArtifactError(TlInterpError, ValueError):
    """A stored file that is missing, truncated, corrupt (checksum mismatch) or of another kind;
    the message names the file and how to rebuild or replace it."""


class ModelLoadError(TlInterpError, RuntimeError):
    """A model or checkpoint that cannot be loaded, with the reason and what to do."""


class TypeCheckError(TlInterpError, TypeError):
    """An argument of the wrong type (or a tensor of the wrong dtype) at a public entry point."""


class TlInterpWarning(UserWarning):
    """Base class of tl_interp's warnings."""


class FastPathWarning(TlInterpWarning):
    """A fast path was not taken because one of its guards failed; the exact full forward ran."""


class TlInterpDeprecationWarning(TlInterpWarning, DeprecationWarning):
    """An old parameter name or value that still works for one release."""
