"""Content fingerprints: the same digest for the same content, in any process, on any run.

A shard of a plan is stored under a digest of everything its values depend on (see
``_store``). Most of that is data -- tokens, masks, weights, options -- but cells and metrics
are closures over tensors, so the fingerprint reads a function by its content, the way
cloudpickle sends it by value: its bytecode and constants, its defaults, the values its
closure cells hold and the globals it names. Functions and classes importable by name (library
code) count by name, as pickle sends them; the package version is part of every shard's
address. Objects are read structurally (containers in order, sets sorted, dataclasses by
field, anything else through ``__reduce_ex__``, as pickle reads it); shared objects are hashed
once. Source locations (file names, line numbers) are left out, so moving code does not
invalidate a store.
"""

import dataclasses
import enum
import functools
import hashlib
import importlib
import sys
import types
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from tl_interp._checks import checked
from tl_interp.errors import TypeCheckError

__all__ = ["Fingerprint", "model_digest", "tensor_digest", "blake"]

_CODE_FIELDS = ("co_argcount", "co_posonlyargcount", "co_kwonlyargcount", "co_flags", "co_names", "co_varnames",
                "co_freevars", "co_cellvars")


def blake(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=20)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()


def tensor_digest(t: Tensor) -> bytes:
    """Dtype, shape and the bytes of the values (on the CPU) of one tensor."""
    flat = t.detach().to("cpu").contiguous().reshape(-1)
    raw = flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""
    return blake(b"tensor", str(t.dtype).encode(), repr(tuple(t.shape)).encode(), raw)


def _by_name(obj: Any) -> str | None:
    """``module.qualname`` when importing that gives back ``obj`` itself (pickle's by-reference test)."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or module == "__main__":
        return None
    try:
        found: Any = sys.modules.get(module) or importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except (ImportError, AttributeError):
        return None
    return f"{module}.{qualname}" if found is obj else None


class Fingerprint:
    """Digests of objects, sharing the work for objects seen before (keep one per plan).

    Args:
        opaque: objects that count by a fixed label instead of their content (the plan's
            model, whose digest is taken separately).

    Example:
        >>> import torch
        >>> scale = torch.tensor(2.0)
        >>> a = Fingerprint().hex(lambda x: x * scale)
        >>> b = Fingerprint().hex(lambda x: x * scale)
        >>> c = Fingerprint().hex(lambda x: x * torch.tensor(3.0))
        >>> a == b, a == c
        (True, False)
    """

    def __init__(self, opaque: Mapping[int, str] | None = None) -> None:
        self._memo: dict[int, bytes] = {}
        self._alive: list[Any] = []  # ids stay valid while memoised objects live
        self._busy: set[int] = set()
        self._opaque = dict(opaque or {})

    def hex(self, obj: Any) -> str:
        """The digest of ``obj`` as hex."""
        return self.digest(obj).hex()

    def digest(self, obj: Any) -> bytes:
        """The digest of ``obj`` (20 bytes)."""
        if obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
            return blake(type(obj).__name__.encode(), repr(obj).encode())
        key = id(obj)
        if key in self._opaque:
            return blake(b"opaque", self._opaque[key].encode())
        if key in self._memo:
            return self._memo[key]
        if key in self._busy:  # a cycle: the object's own digest is being computed
            return blake(b"cycle", type(obj).__qualname__.encode())
        self._busy.add(key)
        try:
            out = self._compute(obj)
        finally:
            self._busy.discard(key)
        self._memo[key] = out
        self._alive.append(obj)
        return out

    def _compute(self, obj: Any) -> bytes:
        d = self.digest
        if isinstance(obj, Tensor):
            return tensor_digest(obj)
        if isinstance(obj, (torch.dtype, torch.device, torch.Size, range, slice)):
            return blake(type(obj).__name__.encode(), repr(obj).encode())
        if isinstance(obj, enum.Enum):
            return blake(b"enum", d(type(obj)), obj.name.encode())
        if isinstance(obj, (tuple, list)):
            return blake(type(obj).__name__.encode(), *map(d, obj))
        if isinstance(obj, (dict, types.MappingProxyType)):
            return blake(b"dict", *(p for k, v in obj.items() for p in (d(k), d(v))))
        if isinstance(obj, (set, frozenset)):
            return blake(b"set", *sorted(map(d, obj)))
        if isinstance(obj, types.CodeType):
            fields = [repr(getattr(obj, f)).encode() for f in _CODE_FIELDS]
            return blake(b"code", obj.co_code, *fields, *map(d, obj.co_consts))
        if isinstance(obj, types.BuiltinMethodType) and not isinstance(obj.__self__, (types.ModuleType, type(None))):
            return blake(b"bound builtin", d(obj.__self__), obj.__name__.encode())  # e.g. tensor.add
        if isinstance(obj, (type, types.ModuleType, types.BuiltinFunctionType, types.MethodDescriptorType,
                            types.WrapperDescriptorType)):
            return self._named(obj)
        if isinstance(obj, types.FunctionType):
            return self._function(obj)
        if isinstance(obj, types.MethodType):
            return blake(b"method", d(obj.__self__), d(obj.__func__))
        if isinstance(obj, functools.partial):
            return blake(b"partial", d(obj.func), d(obj.args), d(obj.keywords))
        if dataclasses.is_dataclass(obj):
            return blake(b"dataclass", d(type(obj)),
                          *(p for f in dataclasses.fields(obj) for p in (f.name.encode(), d(getattr(obj, f.name)))))
        if isinstance(obj, nn.Module):
            public = {k: v for k, v in vars(obj).items() if not k.startswith("_")}
            return blake(b"module", d(type(obj)), d(dict(obj.state_dict())), d(public))
        return self._reduced(obj)

    def _named(self, obj: Any) -> bytes:
        name = _by_name(obj) if not isinstance(obj, types.ModuleType) else obj.__name__
        if name is None and isinstance(obj, type):  # a class defined in a function or __main__
            body = {k: v for k, v in vars(obj).items() if k not in ("__dict__", "__weakref__", "__doc__")}
            return blake(b"class", obj.__qualname__.encode(), self.digest(obj.__bases__), self.digest(body))
        return blake(b"named", (name or repr(obj)).encode())

    def _function(self, fn: types.FunctionType) -> bytes:
        name = _by_name(fn)
        code = self.digest(fn.__code__)
        if name is not None:  # library code: by name, like pickle (the version is in the address)
            return blake(b"function", name.encode(), code)
        cells = [c.cell_contents if _filled(c) else None for c in (fn.__closure__ or ())]
        return blake(b"closure", fn.__qualname__.encode(), code, self.digest(fn.__defaults__),
                      self.digest(fn.__kwdefaults__), self.digest(cells), self.digest(_globals_used(fn)))

    def _reduced(self, obj: Any) -> bytes:
        try:
            reduced = obj.__reduce_ex__(4)
        except Exception as err:  # noqa: BLE001 - the caller says which object could not be read
            raise TypeCheckError(f"no content fingerprint for a {type(obj).__qualname__}: {err}") from err
        if isinstance(reduced, str):  # a global singleton, pickled by name
            return blake(b"global", reduced.encode(), self.digest(type(obj)))
        parts = list(reduced[:3]) + [list(reduced[3]) if len(reduced) > 3 and reduced[3] is not None else None,
                                     dict(reduced[4]) if len(reduced) > 4 and reduced[4] is not None else None]
        return blake(b"reduced", self.digest(type(obj)), *map(self.digest, parts))


def _filled(cell: types.CellType) -> bool:
    try:
        cell.cell_contents
    except ValueError:  # a cell not yet assigned
        return False
    return True


def _globals_used(fn: types.FunctionType) -> dict[str, Any]:
    """The module-level values ``fn`` (and the functions nested in it) name, by name."""
    names: set[str] = set()
    stack = [fn.__code__]
    while stack:
        code = stack.pop()
        names.update(code.co_names)
        stack.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    scope = fn.__globals__
    return {n: scope[n] for n in sorted(names) if n in scope and n != "__builtins__"}


@checked
def model_digest(model: nn.Module) -> str:
    """A digest of a model's weights, buffers, class and configuration (its device left out).

    Example:
        >>> from torch import nn
        >>> a, b = nn.Linear(2, 2), nn.Linear(2, 2)
        >>> model_digest(a) == model_digest(a), model_digest(a) == model_digest(b)
        (True, False)
    """
    fp = Fingerprint()
    cfg = getattr(model, "cfg", None)
    settings: Any = None
    if cfg is not None:
        fields = ({f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)} if dataclasses.is_dataclass(cfg)
                  else dict(vars(cfg)))
        settings = {k: v for k, v in fields.items() if k not in ("device", "n_devices")}
    state = model.state_dict()
    weights = [fp.digest(name) + tensor_digest(t) for name, t in state.items()]
    return blake(b"model", fp.digest(type(model)), fp.digest(settings), *weights).hex()
