"""Runtime argument checks that users get, not just the test suite.

``@checked`` makes a public function check its arguments' types (beartype) and tensor shapes
(jaxtyping annotations such as ``Float[Tensor, "batch pos"]``) on every call, and turns a
violation into tl_interp's own errors, so callers see one taxonomy: an option outside its
``Literal`` values is an ``OptionError``, a tensor of the wrong shape a ``ShapeError``,
anything else a ``TypeCheckError`` naming the parameter, what it got and what it takes.
"""

import functools
import inspect
import warnings
import re
import typing
from collections.abc import Callable
from typing import Any, TypeVar

from beartype import BeartypeConf, beartype
from beartype.roar import BeartypeCallHintParamViolation
from jaxtyping import TypeCheckError as JaxtypingError
from jaxtyping import jaxtyped
from torch import Tensor

from tl_interp.errors import OptionError, ShapeError, TlInterpDeprecationWarning, TypeCheckError

__all__ = ["checked", "is_checked", "renamed"]

F = TypeVar("F", bound=Callable[..., Any])
_UnionType = type(int | str)
# PEP 484's numeric tower: an int is accepted where a float is declared (memory_mb=512, scale=2)
_BEARTYPE = beartype(conf=BeartypeConf(is_pep484_tower=True))
_PARAM = re.compile(r"parameter (?:'|\")?(\w+)(?:'|\")?")


def _literal_values(hint: Any) -> tuple[Any, ...] | None:
    """The allowed values of a ``Literal`` hint (inside an ``X | None`` too), else None."""
    if typing.get_origin(hint) is typing.Literal:
        return typing.get_args(hint)
    args = typing.get_args(hint)
    if args and typing.get_origin(hint) in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in args:
            values = _literal_values(arg)
            if values is not None:
                return values
    return None


def _short(value: Any) -> str:
    if isinstance(value, Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 80 else f"a {type(value).__name__}"


def _hint_label(hint: Any) -> str:
    members = [a for a in typing.get_args(hint)] if typing.get_origin(hint) in (typing.Union, _UnionType) else []
    if members:
        return " | ".join(_hint_label(a) for a in members)
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    text = text.replace("typing.", "").replace("collections.abc.", "").replace("torch.", "")
    return text if len(text) <= 120 else text[:117] + "..."


def _tensor_hints(hint: Any) -> list[Any]:
    """The jaxtyping array types inside a hint (``Float[Tensor, ...] | None`` ...)."""
    if hasattr(hint, "dims") and hasattr(hint, "dtypes"):
        return [hint]
    return [h for arg in typing.get_args(hint) for h in _tensor_hints(arg)]


def _translate(err: Exception, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Exception:
    message = str(err)
    match = _PARAM.search(message)
    name = match.group(1) if match else None
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs).arguments
        hints = typing.get_type_hints(fn, include_extras=True)
    except (TypeError, NameError):
        bound, hints = {}, {}
    # the public path: a function of a private module (ti.metrics._constructors) is named where it is
    # exported (ti.metrics), never by the file it lives in
    public = [part for part in fn.__module__.split(".")[1:] if not part.startswith("_")]
    label = ".".join(["ti", *public, fn.__qualname__])
    if name is None or name not in hints:
        return TypeCheckError(f"{label}: {message.splitlines()[0]}")
    value, hint = bound.get(name), hints[name]
    values = _literal_values(hint)
    if values is not None and not isinstance(value, (Tensor, list, tuple, dict)):
        options = ", ".join(repr(v) for v in values)
        return OptionError(f"{label}: {name} must be one of {options}, not {value!r}")
    arrays = _tensor_hints(hint)
    if isinstance(value, Tensor) and arrays:
        dtype = str(value.dtype).replace("torch.", "")
        if not any(dtype in getattr(h, "dtypes", ()) for h in arrays):
            kinds = sorted({str(h.__name__).split("[")[0] for h in arrays})
            return TypeCheckError(f"{label}: {name} has dtype {value.dtype}; it takes a {' or '.join(kinds)} tensor "
                                  f"({_hint_label(hint)})")
        dims = message.split("axis annotation are as follows.", 1)
        bound = ", ".join(line.strip() for line in dims[1].splitlines() if "=" in line) if len(dims) == 2 else ""
        return ShapeError(f"{label}: {name} has shape {tuple(value.shape)}, which does not fit {_hint_label(hint)}"
                          + (f" (with {bound} from the other arguments)" if bound else ""))
    return TypeCheckError(f"{label}: {name} is {_short(value)}; it takes {_hint_label(hint)}")


def checked(fn: F) -> F:
    """Check a public function's arguments at every call (types and jaxtyping shapes).

    Example:
        >>> from typing import Literal
        >>> @checked
        ... def pick(how: Literal["a", "b"] = "a") -> str:
        ...     return how
        >>> pick("c")
        Traceback (most recent call last):
        ...
        tl_interp.errors.OptionError: ti.pick: how must be one of 'a', 'b', not 'c'
    """
    wrapped = jaxtyped(typechecker=_BEARTYPE)(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except (BeartypeCallHintParamViolation, JaxtypingError) as err:
            # only this function's own parameters: a violation from deeper down is not ours to explain
            if fn.__qualname__ not in str(err).split("\n", 3)[0] + str(err)[:400]:
                raise
            if "return" in str(err).split("\n", 1)[0].lower() and "parameter" not in str(err)[:200]:
                raise
            raise _translate(err, fn, args, kwargs) from None

    call.__tl_interp_checked__ = True  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]


def is_checked(fn: Any) -> bool:
    """Whether ``fn`` checks its arguments at runtime (``@checked``)."""
    return bool(getattr(fn, "__tl_interp_checked__", False))


def renamed(**old_to_new: str) -> Callable[[F], F]:
    """Accept old keyword names for one release, with a deprecation warning.

    Example:
        >>> @renamed(factor="scale")
        ... def grow(x: float, scale: float = 1.0) -> float:
        ...     return x * scale
        >>> import warnings
        >>> with warnings.catch_warnings(record=True):
        ...     grow(2.0, factor=3.0)
        6.0
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise OptionError(f"{fn.__qualname__}: give {new}= ({old}= is its old name), not both")
                    warnings.warn(f"{fn.__qualname__}({old}=...) is now {new}=", TlInterpDeprecationWarning,
                                  stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        call.__tl_interp_renamed__ = dict(old_to_new)  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate
