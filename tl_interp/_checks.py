"""Runtime argument checks that users get, not just the test suite.

``@checked`` makes a public function check its arguments' types (beartype) and tensor shapes
(jaxtyping annotations such as ``Float[Tensor, "batch pos"]``) on every call, and turns a
violation into tl_interp's own errors, so callers see one taxonomy: an option outside its
``Literal`` values is an ``OptionError``, a tensor of the wrong shape a ``ShapeError``,
anything else a ``TypeCheckError`` naming the parameter, what it got and what it takes.
"""

import functools
import inspect
import re
import sys
import typing
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from beartype import BeartypeConf, beartype
from beartype.roar import BeartypeCallHintParamViolation
from jaxtyping import TypeCheckError as JaxtypingError
from jaxtyping import jaxtyped
from torch import Tensor

from tl_interp.errors import OptionError, SelectionError, ShapeError, TlInterpDeprecationWarning, TypeCheckError

__all__ = ["checked", "is_checked", "is_retired", "renamed", "reordered", "retired", "retired_keywords",
           "public_name", "check_count", "check_layer"]

F = TypeVar("F", bound=Callable[..., Any])
_UnionType = type(int | str)
# PEP 484's numeric tower: an int is accepted where a float is declared (memory_mb=512, scale=2)
_BEARTYPE = beartype(conf=BeartypeConf(is_pep484_tower=True))
_MODULE_PREFIX = re.compile(r"\b(?:typing|collections\.abc|torch|tl_interp|transformer_lens|sae_lens)(?:\.\w+)*\.")

# Why ``batch_size=`` is retired wherever a study's passes are sized by ``memory_mb=``.
SIZED_BY_MEMORY = "passes are sized by memory_mb= (megabytes per forward pass); results do not depend on it"
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
    text = _MODULE_PREFIX.sub("", text)  # class names only: never a (private) module path
    return text if len(text) <= 120 else text[:117] + "..."


def _tensor_hints(hint: Any) -> list[Any]:
    """The jaxtyping array types inside a hint (``Float[Tensor, ...] | None`` ...)."""
    if hasattr(hint, "dims") and hasattr(hint, "dtypes"):
        return [hint]
    return [h for arg in typing.get_args(hint) for h in _tensor_hints(arg)]


def public_name(obj: Any) -> str:
    """The name a user calls ``obj`` by: the shortest public module that exports it, never a
    private module (``ti.hooks.add``, not ``ti.hooks._steer.add``).

    Example:
        >>> from tl_interp.hooks._steer import add
        >>> public_name(add)
        'ti.hooks.add'
        >>> from tl_interp.patching._result import PatchingResult
        >>> public_name(PatchingResult.top)
        'ti.patching.PatchingResult.top'
    """
    qualname = getattr(obj, "__qualname__", type(obj).__qualname__)
    home = getattr(obj, "__module__", None) or "tl_interp"
    parts, owner = home.split("."), qualname.split(".")[0]
    public = [".".join(parts[:end]) for end in range(1, len(parts) + 1)
              if not any(p.startswith("_") for p in parts[:end])]
    module = public[-1] if public else "tl_interp"
    for prefix in public:  # the shortest public module that exports the same object
        found = vars(sys.modules[prefix]).get(owner) if prefix in sys.modules else None
        if getattr(found, "__module__", None) == home and getattr(found, "__qualname__", None) == owner:
            module = prefix
            break
    name = f"{module}.{qualname}".replace(".<locals>", "")
    return "ti" + name[len("tl_interp"):] if name.startswith("tl_interp") else name


def check_count(value: Any, name: str, *, low: int = 1, high: int | None = None, what: str = "",
                items: str = "") -> int:
    """A count of items to select (``k`` of a top-k, ``top_k``, ``n``): an int in ``low..high``.

    Every such count in the toolkit is checked here, so one mistake raises one class: a non-int
    is a ``TypeCheckError``, a count outside the range a ``SelectionError``. A count is never
    quietly cut to what exists: ``high`` is how many items there are, and ``items`` names them
    (``"entries"``) so the message says how many exist.

    Example:
        >>> check_count(3, "k", high=5)
        3
        >>> check_count(6, "k", high=5, what="ti.weights.top_k", items="tokens")
        Traceback (most recent call last):
        ...
        tl_interp.errors.SelectionError: ti.weights.top_k: k=6 is out of range: there are 5 tokens; choose 1 <= k <= 5
    """
    prefix = f"{what}: " if what else ""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeCheckError(f"{prefix}{name} must be an int, not {_short(value)}")
    if value < low or (high is not None and value > high):
        there = f": there are {high} {items}" if items and high is not None else ""
        if high is not None and high < low:
            bounds = f"there is nothing to choose {name} of"
        else:
            bounds = "choose " + (f"{low} <= {name} <= {high}" if high is not None else f"{name} >= {low}")
        raise SelectionError(f"{prefix}{name}={value} is out of range{there}; {bounds}")
    return value


def check_layer(layer: int, n_layers: int, what: str = "", *, from_end: bool = False) -> int:
    """One layer index, checked against the model's ``n_layers`` (the one check of a single layer);
    ``from_end`` also takes negative indices, counted from the last layer.

    Example:
        >>> check_layer(1, 2)
        1
        >>> check_layer(2, 2, "ti.weights.mlp_out")
        Traceback (most recent call last):
        ...
        tl_interp.errors.SelectionError: ti.weights.mlp_out: layer 2 is out of range; the model has layers 0..1
    """
    prefix = f"{what}: " if what else ""
    if isinstance(layer, bool) or not isinstance(layer, int):
        raise TypeCheckError(f"{prefix}layer must be an int, not {layer!r}")
    if not (-n_layers if from_end else 0) <= layer < n_layers:
        negative = f", or {-n_layers}..-1 from the end" if from_end else ""
        raise SelectionError(f"{prefix}layer {layer} is out of range; the model has layers 0..{n_layers - 1}{negative}")
    return layer % n_layers


def _translate(err: Exception, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               hints: dict[str, Any] | None = None, label: str | None = None) -> Exception:
    message = str(err)
    match = _PARAM.search(message)
    name = match.group(1) if match else None
    try:
        bound = inspect.signature(fn).bind_partial(*args, **kwargs).arguments
        hints = typing.get_type_hints(fn, include_extras=True) if hints is None else hints
    except (TypeError, NameError):
        bound, hints = {}, {}
    label = label or public_name(fn)
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


def _ours(err: Exception, qualname: str) -> bool:
    """Whether a violation is about the parameters of ``qualname`` itself (a violation from
    deeper down is not ours to explain, and a wrong return value is a bug, not a caller's mistake)."""
    text = str(err)
    if qualname not in text.split("\n", 3)[0] + text[:400]:
        return False
    return not ("return" in text.split("\n", 1)[0].lower() and "parameter" not in text[:200])


def checked(fn: F) -> F:
    """Check a public function's arguments at every call (types and jaxtyping shapes).

    A dataclass is checked the same way: its fields, at construction.

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
    if inspect.isclass(fn):
        return _checked_class(fn)  # type: ignore[return-value]
    wrapped = jaxtyped(typechecker=_BEARTYPE)(fn)

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return wrapped(*args, **kwargs)
        except (BeartypeCallHintParamViolation, JaxtypingError) as err:
            if not _ours(err, fn.__qualname__):
                raise
            raise _translate(err, fn, args, kwargs) from None

    call.__tl_interp_checked__ = True  # type: ignore[attr-defined]
    return call  # type: ignore[return-value]


def _checked_class(cls: type) -> type:
    """``@checked`` on a dataclass: jaxtyping checks the fields in ``__init__``; violations are
    translated with the class's field hints and named after the class."""
    plain_init = cls.__init__
    cls = jaxtyped(typechecker=_BEARTYPE)(cls)
    init = cls.__init__

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            init(self, *args, **kwargs)
        except (BeartypeCallHintParamViolation, JaxtypingError) as err:
            if not _ours(err, cls.__qualname__):
                raise
            hints = typing.get_type_hints(cls, include_extras=True)
            raise _translate(err, plain_init, (self, *args), kwargs, hints, public_name(cls)) from None

    cls.__init__ = __init__  # type: ignore[misc]
    cls.__tl_interp_checked__ = True  # type: ignore[attr-defined]
    return cls


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


def retired(new: str) -> Callable[[F], F]:
    """Keep an old function or method name working for one release: every call warns, naming ``new``.

    The old name keeps its old signature and return type (code written against it still runs);
    ``new`` says what replaces it.

    Example:
        >>> @retired("top(k)")
        ... def ranking(k: int = 3) -> list[int]:
        ...     return list(range(k))
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     ranking(2), caught[0].category.__name__, str(caught[0].message)
        ([0, 1], 'TlInterpDeprecationWarning', 'ranking is now top(k)')
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            warnings.warn(f"{fn.__qualname__} is now {new}", TlInterpDeprecationWarning, stacklevel=2)
            return fn(*args, **kwargs)

        call.__tl_interp_retired__ = new  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate


def is_retired(fn: Any) -> str | None:
    """What replaces ``fn`` if it is a retired name (``@retired``), else None."""
    return getattr(fn, "__tl_interp_retired__", None)


def reordered(old: tuple[str, ...], is_old: Callable[[tuple[Any, ...]], bool]) -> Callable[[F], F]:
    """Accept a function's previous positional order for one release, with a warning.

    Only where the arguments say which order they came in: ``is_old(args)`` recognises the old
    order from the positional arguments' types (a mapping of tasks where the vectors now go, an
    SAE where the model now goes); any other call runs as written, so an old call the predicate
    can't recognise meets the new signature's own type checks (a typed error, never a silent swap).

    Example:
        >>> @reordered(("b", "a"), lambda args: len(args) == 2 and isinstance(args[0], str))
        ... def pair(a: int, b: str) -> str:
        ...     return f"{a}{b}"
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     pair("x", 1), str(caught[0].message)
        ('1x', 'pair(b, a, ...) is now pair(a, b, ...): the old order is accepted for one release')
    """

    def decorate(fn: F) -> F:
        signature = inspect.signature(fn).parameters
        params = [p.name for p in signature.values() if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        # the old order: the first positional parameters, or some of them now keyword-only
        now = [n if n in params else f"*, {n}=" for n in signature if n in old]
        if not set(old) <= set(signature) or set(params[:len(old)]) - set(old):
            raise TypeError(f"reordered: {old} is not an order of {fn.__qualname__}'s first parameters {params}")

        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            if not is_old(args):
                return fn(*args, **kwargs)
            named = dict(zip(tuple(old) + tuple(params[len(old):]), args))
            both = sorted(set(named) & set(kwargs))
            if both:
                raise OptionError(f"{fn.__qualname__}: {', '.join(both)} given twice (positionally in the old order "
                                  "and by name)")
            warnings.warn(f"{fn.__qualname__}({', '.join(old)}, ...) is now {fn.__qualname__}"
                          f"({', '.join(now)}, ...): the old order is accepted for one release",
                          TlInterpDeprecationWarning, stacklevel=2)
            return fn(**named, **kwargs)

        call.__tl_interp_reordered__ = tuple(old)  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate


def retired_keywords(**old_to_why: str) -> Callable[[F], F]:
    """Accept an old keyword that no longer has a meaning here for one release, ignored, with a warning.

    For options whose value never changed a result (how many rows a pass held, now sized by
    ``memory_mb``): an old call keeps working and gives the same answer, and says what to write.

    Example:
        >>> @retired_keywords(batch_size="passes are sized by memory_mb=")
        ... def read(x: float, memory_mb: float = 1024.0) -> float:
        ...     return x
        >>> import warnings
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     read(2.0, batch_size=8)
        2.0
        >>> str(caught[0].message)
        'read(batch_size=...) is retired and ignored: passes are sized by memory_mb='
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            for old, why in old_to_why.items():
                if old in kwargs:
                    kwargs.pop(old)
                    warnings.warn(f"{fn.__qualname__}({old}=...) is retired and ignored: {why}",
                                  TlInterpDeprecationWarning, stacklevel=2)
            return fn(*args, **kwargs)

        call.__tl_interp_retired_keywords__ = dict(old_to_why)  # type: ignore[attr-defined]
        return call  # type: ignore[return-value]

    return decorate

