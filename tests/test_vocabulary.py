"""Every public signature follows the vocabulary table in docs/vocabulary.md.

The table names one parameter per concept; this test reads it, walks every public function,
class constructor and public method of the modules ``tl_interp`` exposes, and checks that
(1) no retired name appears in a signature (old names live only in ``@renamed`` aliases),
(2) a parameter named after a concept carries that concept's annotation, and (3) public
functions check their arguments at runtime (``@checked``), for users as for the suite.
"""

import importlib
import inspect
import re
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from torch import Tensor

import tl_interp
from tl_interp._checks import is_checked
from tl_interp._types import IndexSelection, NameFilter
from tl_interp.engine.inputs import Inputs
from tl_interp.metrics import Reader
from tl_interp.positions import Positions

DOC = Path(__file__).resolve().parents[1] / "docs" / "vocabulary.md"


def _tables() -> tuple[set[str], set[str]]:
    """(parameter names of the concept table, retired parameter names)."""
    text = DOC.read_text()
    concept, retired = text.split("Retired names", 1)
    params = set()
    for line in concept.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 3 and cells[1].startswith("`"):
            params |= set(re.findall(r"`(\w+)`", cells[1]))
    old = set()
    for line in retired.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2:
            old |= set(re.findall(r"`(\w+)=", cells[0]))
    return params, old


PARAMS, RETIRED = _tables()


def _is(hint: Any, *allowed: Any) -> bool:
    """Whether ``hint`` is one of ``allowed``, or a union whose non-None members all are."""
    if any(hint == a for a in allowed):
        return True
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    flat = set()
    for a in allowed:
        flat |= set(typing.get_args(a)) if typing.get_args(a) and typing.get_origin(a) is not typing.Literal else {a}
    return bool(args) and typing.get_origin(hint) in (typing.Union, type(int | str)) and all(
        a in flat or any(a == b for b in allowed) for a in args)


def _index_like(hint: Any) -> bool:
    text = str(hint)
    return "Sequence[int" in text or "tuple[" in text


def _tensor(hint: Any) -> bool:
    return hint is Tensor or "Tensor" in str(hint)


# concept parameter -> a check of its annotation
CHECKS: dict[str, Callable[[Any], bool]] = {
    "positions": lambda h: _is(h, Positions, Reader),
    # selections of heads / neurons / rows: IndexSelection, or a narrower list-like form of it
    "heads": lambda h: _is(h, IndexSelection) or _index_like(h),
    "neurons": lambda h: _is(h, IndexSelection) or _index_like(h),
    "rows": lambda h: _is(h, IndexSelection) or _index_like(h),
    "where": lambda h: _is(h, NameFilter, str),
    "scale": lambda h: h is float or _is(h, float) or (typing.get_args(h) and float in typing.get_args(h)),
    "scales": lambda h: _is(h, Sequence[float], Sequence[float] | float),
    "over": lambda h: _is(h, str | Sequence[str] | None, str | Sequence[str]),
    "site": lambda h: _is(h, str, str | Sequence[str] | None, str | Sequence[str]),
    "layers": lambda h: _is(h, Sequence[int] | None, Sequence[int]),
    "seed": lambda h: _is(h, int, int | None),
    "n_boot": lambda h: h is int,
    "n_permutations": lambda h: _is(h, int, int | None),
    "progress": lambda h: h is bool,
    "memory_mb": lambda h: h is float,
    "fast_paths": lambda h: h is bool,
    "skip_unchanged": lambda h: h is bool,
    "attention_mask": lambda h: _tensor(h),
    "inputs": lambda h: _is(h, Inputs, Inputs | None) or h is Any,  # Any: custom modules' own inputs
    "clean": lambda h: _is(h, Inputs),
    "corrupted": lambda h: _is(h, Inputs),
    "positive": lambda h: _is(h, Inputs),
    "negative": lambda h: _is(h, Inputs),
    "reference": lambda h: _is(h, Inputs, Inputs | None) or _tensor(h),
    "direction": lambda h: typing.get_origin(h) is typing.Literal,
    "metric": lambda h: h is Any or "Callable" in str(h) or "Metric" in str(h),
    "prompt": lambda h: True,  # views of one prompt: checked by their own tests (any input form)
}
# on results, ``metric`` names one of the metrics the result recorded
RESULT_METRIC = {"metric": lambda h: h is str}


def _public_modules() -> list[Any]:
    modules = [tl_interp]
    for name in tl_interp.__all__:
        value = getattr(tl_interp, name)
        if inspect.ismodule(value):
            modules.append(value)
    return modules


def _members() -> Iterator[tuple[str, Callable[..., Any], bool]]:
    """(qualified name, callable, is a module-level function) of every public API entry."""
    seen: set[int] = set()
    for module in _public_modules():
        for name in getattr(module, "__all__", []):
            obj = getattr(module, name, None)
            if obj is None or id(obj) in seen or inspect.ismodule(obj):
                continue
            seen.add(id(obj))
            label = f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                if obj.__module__.startswith("tl_interp"):
                    yield f"{label}.__init__", obj.__init__, False
                    for meth_name, meth in vars(obj).items():
                        if not meth_name.startswith("_") and inspect.isfunction(meth):
                            yield f"{label}.{meth_name}", meth, False
            elif inspect.isfunction(obj) and getattr(obj, "__module__", "").startswith("tl_interp"):
                yield label, obj, True


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    target = inspect.unwrap(fn)
    try:
        return typing.get_type_hints(target, include_extras=True)
    except Exception:  # forward references a module can't resolve: names still get checked
        return {}


def _result_classes(base: type) -> set[type]:
    out = {base}
    for sub in base.__subclasses__():
        out |= _result_classes(sub)
    return out


def test_the_table_parses() -> None:
    assert {"positions", "scale", "scales", "over", "where", "site", "inputs", "metric", "seed"} <= PARAMS
    assert {"units", "multipliers", "factor", "prompts", "position"} <= RETIRED


def test_no_public_signature_uses_a_retired_name() -> None:
    bad = []
    for label, fn, _ in _members():
        for param in inspect.signature(fn).parameters:
            if param in RETIRED:
                bad.append(f"{label}({param}=...)")
    assert not bad, "retired parameter names in public signatures (use @renamed): " + ", ".join(bad)


def test_concept_parameters_carry_the_table_annotation() -> None:
    from tl_interp.results import Result

    bad = []
    for label, fn, _ in _members():
        hints = _hints(fn)
        owner = getattr(inspect.unwrap(fn), "__qualname__", "").split(".")[0]
        on_result = any(owner == cls.__name__ for cls in _result_classes(Result))
        for param in inspect.signature(fn).parameters:
            check = (RESULT_METRIC.get(param) if on_result else None) or CHECKS.get(param)
            if check is not None and param in hints and not check(hints[param]):
                bad.append(f"{label}: {param}: {hints[param]}")
    assert not bad, "parameters whose annotation disagrees with docs/vocabulary.md:\n" + "\n".join(bad)


def test_public_functions_check_their_arguments_at_runtime() -> None:
    unchecked = [label for label, fn, is_function in _members() if is_function and not is_checked(fn)
                 and inspect.signature(fn).parameters]
    assert not unchecked, "public functions without @checked: " + ", ".join(unchecked)


@pytest.mark.parametrize("call, error, message", [
    (lambda: tl_interp.hooks.add("blocks.0.hook_resid_pre", "not a tensor"), tl_interp.errors.TypeCheckError,
     r"ti\.hooks\.add: vector is 'not a tensor'"),
    (lambda: tl_interp.patching.sweep(None, "a", "b", len, direction="up"), tl_interp.OptionError,
     r"direction must be one of 'denoise', 'noise', not 'up'"),
])
def test_runtime_checks_raise_the_taxonomy(call: Callable[[], Any], error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        call()
