"""Every public signature follows the vocabulary tables in docs/vocabulary.md.

The concept table names one parameter per concept; a second table lists the study-specific
parameters (name, meaning, where). This test reads both, walks every public function, class
constructor and public method of every public module of ``tl_interp`` (found by walking the
package, so a new module is covered the day it lands), and checks that

1. every annotation resolves (an annotation ``get_type_hints`` can't read is a failure, not a skip),
2. no retired name appears in a signature (old names live only in ``@renamed`` aliases),
3. every parameter name is a concept or a documented study-specific name,
4. a parameter named after a concept carries that concept's annotation (``Any`` only where a
   named exception below says why),
5. public functions check their arguments at runtime (``@checked``), and
6. retired names and spellings still work for one release, with a ``TlInterpDeprecationWarning``,
   and appear nowhere in the demos, benchmarks and tests except where a test checks the warning.
"""

import ast
import functools
import importlib
import inspect
import pkgutil
import re
import types
import typing
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from torch import Tensor

import tl_interp
from tl_interp._checks import is_checked
from tl_interp._types import IndexSelection, MetricFn, NameFilter, Reduce
from tl_interp.engine.inputs import Inputs
from tl_interp.errors import TlInterpDeprecationWarning
from tl_interp.metrics import Reader
from tl_interp.positions import Positions

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "vocabulary.md"
STUDY_HEADING = "Study-specific parameters"
RETIRED_HEADING = "Retired names"


def _rows(text: str, width: int) -> Iterator[list[str]]:
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]  # "\|" inside a cell
        if line.strip().startswith("|") and len(cells) == width and not set(cells[0]) <= set("-: "):
            yield cells


def _tables() -> tuple[set[str], dict[str, tuple[str, ...]], set[str]]:
    """(concept parameter names, study-specific names -> where they may be used, retired names)."""
    text = DOC.read_text()
    concept, rest = text.split(STUDY_HEADING, 1)
    study, retired = rest.split(RETIRED_HEADING, 1)
    params = {name for cells in _rows(concept, 3) for name in re.findall(r"`(\w+)`", cells[1])}
    specific = {name: tuple(re.findall(r"`([\w.]+)`", cells[2]))
                for cells in _rows(study, 3) if cells[0] != "parameter" for name in re.findall(r"`(\w+)`", cells[0])}
    old = {name for cells in _rows(retired, 2) for name in re.findall(r"`(\w+)=", cells[0])}
    return params, specific, old


PARAMS, STUDY_WHERE, RETIRED = _tables()
STUDY_PARAMS = set(STUDY_WHERE)
# Retired everywhere: a retired name that is still a concept elsewhere is retired only where its row says.
RETIRED_EVERYWHERE = RETIRED - PARAMS - STUDY_PARAMS

# Temporary: names the parallel branches rename or retype. Remove each at merge.
# fixed by the api branch (top-k family, n vs k, paired argument names A,B / X,Y / x,y / a,b)
# Parameters whose annotation differs from the table's on purpose (``Any`` included), with why.
ANNOTATION_EXCEPTIONS: dict[str, str] = {
    "tl_interp.geometry.subspace_ablation:inputs": "a custom module's own inputs: model(inputs, **forward_kwargs)",
    "tl_interp.engine.executors.Plan.__init__:metric": "also a MetricSet (not callable) or an engine.run.Staged",
    "tl_interp.engine.run.BaseRun.__init__:metric": "also a MetricSet (not callable) or an engine.run.Staged",
    "tl_interp.engine.paths.prefix_kv.reason:metric": "a Plan's metric (see Plan)",
    "tl_interp.engine.paths.read_only.reason:metric": "a Plan's metric (see Plan)",
    "tl_interp.engine.paths.head_columns.narrowed:metric": "a Plan's metric (see Plan)",
    "tl_interp.metrics.bind:metric": "binds a tl_interp metric, returns any other value as it is",
    "tl_interp.metrics.is_metric:metric": "a predicate over any value",
    "tl_interp.positions.is_symbolic:positions": "a predicate over any value",
    "tl_interp.positions.describe:positions": "describes any value (a rejected one too, for the error)",
    "tl_interp.engine.reads.Trace.__init__:positions": "the record of what one call read (a set it grows)",
}


def _is(hint: Any, *allowed: Any) -> bool:
    """Whether ``hint`` is one of ``allowed``, or a union whose non-None members all are."""
    if any(hint == a for a in allowed):
        return True
    flat = set()
    for a in allowed:
        is_union = typing.get_origin(a) in (typing.Union, types.UnionType)
        flat |= set(typing.get_args(a)) if is_union else {a}
    if hint in flat:  # one member of an allowed union: a narrower form (a str where Inputs is allowed)
        return True
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return bool(args) and typing.get_origin(hint) in (typing.Union, types.UnionType) and all(
        a in flat or any(a == b for b in allowed) for a in args)


def _index_like(hint: Any) -> bool:
    text = str(hint)
    return "Sequence[int" in text or "tuple[" in text


def _tensor(hint: Any) -> bool:
    return hint is Tensor or "Tensor" in str(hint)


def _float(hint: Any) -> bool:
    return hint is float or _is(hint, float) or float in typing.get_args(hint)


# concept parameter -> a check of its annotation
CHECKS: dict[str, Callable[[Any], bool]] = {
    "positions": lambda h: _is(h, Positions, Reader),
    # selections of heads / neurons / rows: IndexSelection, or a narrower list-like form of it
    "heads": lambda h: _is(h, IndexSelection) or _index_like(h),
    "neurons": lambda h: _is(h, IndexSelection) or _index_like(h),
    "rows": lambda h: _is(h, IndexSelection) or _index_like(h),
    "where": lambda h: _is(h, NameFilter, str),
    "scale": _float,
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
    "attention_mask": _tensor,
    "inputs": lambda h: _is(h, Inputs, Inputs | None),
    "clean": lambda h: _is(h, Inputs),
    "corrupted": lambda h: _is(h, Inputs),
    "positive": lambda h: _is(h, Inputs),
    "negative": lambda h: _is(h, Inputs),
    "reference": lambda h: _is(h, Inputs, Inputs | None) or _tensor(h),
    "direction": lambda h: typing.get_origin(h) is typing.Literal,
    "metric": lambda h: _is(h, MetricFn, MetricFn | None),
    "reduce": lambda h: _is(h, Reduce),
    "value_scale": lambda h: typing.get_origin(h) is typing.Literal or _is(h, typing.Literal["linear", "symlog"]),
    "prompt": lambda h: True,  # views of one prompt: checked by their own tests (any input form)
}
# on results and their figures, ``metric`` names one of the metrics the result recorded
RESULT_METRIC = {"metric": lambda h: _is(h, str, str | None)}


def _on_a_result(label: str, fn: Callable[..., Any], results: set[str]) -> bool:
    owner = getattr(inspect.unwrap(fn), "__qualname__", "").split(".")[0]
    return owner in results or label.startswith("tl_interp.viz.")


@functools.cache
def _public_modules() -> list[types.ModuleType]:
    """``tl_interp`` and every module under it with no ``_``-prefixed part in its name."""
    modules = [tl_interp]
    for info in pkgutil.walk_packages(tl_interp.__path__, "tl_interp."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            modules.append(importlib.import_module(info.name))
    return modules


def _exposed(module: types.ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:  # no __all__: what the module itself defines under a public name
        names = [n for n, v in vars(module).items()
                 if not n.startswith("_") and getattr(v, "__module__", None) == module.__name__]
    return list(names)


def _members() -> Iterator[tuple[str, Callable[..., Any], bool]]:
    """(qualified name, callable, is a module-level function) of every public API entry."""
    seen: set[int] = set()
    for module in _public_modules():
        for name in _exposed(module):
            obj = getattr(module, name, None)
            if obj is None or id(obj) in seen or inspect.ismodule(obj):
                continue
            seen.add(id(obj))
            label = f"{module.__name__}.{name}"
            if inspect.isclass(obj):
                if obj.__module__.startswith("tl_interp") and not issubclass(obj, BaseException):
                    if "__init__" in vars(obj) or any("__init__" in vars(b) for b in obj.__mro__[1:-1]):
                        yield f"{label}.__init__", obj.__init__, False
                    for meth_name, meth in vars(obj).items():
                        fn = meth.__func__ if isinstance(meth, (classmethod, staticmethod)) else meth
                        if not meth_name.startswith("_") and inspect.isfunction(fn):
                            yield f"{label}.{meth_name}", fn, False
            elif inspect.isfunction(obj) and getattr(obj, "__module__", "").startswith("tl_interp"):
                yield label, obj, True


MEMBERS = list(_members())


def _params(fn: Callable[..., Any]) -> list[str]:
    """Named parameters (not self/cls, not *args/**kwargs)."""
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _hints(fn: Callable[..., Any]) -> dict[str, Any]:
    return typing.get_type_hints(inspect.unwrap(fn), include_extras=True)


def _result_classes(base: type) -> set[type]:
    out = {base}
    for sub in base.__subclasses__():
        out |= _result_classes(sub)
    return out


def test_the_tables_parse() -> None:
    assert {"positions", "scale", "scales", "over", "where", "site", "inputs", "metric", "seed"} <= PARAMS
    assert {"units", "multipliers", "factor", "prompts", "position"} <= RETIRED
    assert {"batch_size", "measures", "value_scale"} <= PARAMS | STUDY_PARAMS
    assert not PARAMS & STUDY_PARAMS, f"names in both tables: {sorted(PARAMS & STUDY_PARAMS)}"
    assert {"batch_size", "metrics", "targets", "rule", "reference_mask"} <= RETIRED_EVERYWHERE | STUDY_PARAMS


def test_the_walk_reaches_every_public_module() -> None:
    names = {m.__name__ for m in _public_modules()}
    assert {"tl_interp.models.zoo", "tl_interp.models.saes", "tl_interp.training", "tl_interp.engine.collect",
            "tl_interp.viz.figures"} <= names
    assert not any("._" in n for n in names)


def test_every_public_annotation_resolves() -> None:
    bad = []
    for label, fn, _ in MEMBERS:
        try:
            _hints(fn)
        except Exception as err:  # noqa: BLE001 - any failure to resolve is what this test reports
            bad.append(f"{label}: {type(err).__name__}: {err}")
    assert not bad, "annotations typing.get_type_hints can't resolve (import the names at module level):\n" + \
        "\n".join(bad)


def test_no_public_signature_uses_a_retired_name() -> None:
    bad = [f"{label}({p}=...)" for label, fn, _ in MEMBERS for p in _params(fn) if p in RETIRED_EVERYWHERE]
    assert not bad, "retired parameter names in public signatures (use @renamed): " + ", ".join(bad)


def test_every_public_parameter_name_is_documented() -> None:
    known = PARAMS | STUDY_PARAMS
    bad = sorted({f"{p} ({label})" for label, fn, _ in MEMBERS for p in _params(fn) if p not in known})
    assert not bad, ("parameter names in neither table of docs/vocabulary.md (use the concept's name, or add a "
                     "row to the study-specific table):\n" + "\n".join(bad))


def _module_of(label: str) -> str:
    names = sorted((m.__name__ for m in _public_modules()), key=len, reverse=True)
    module = next(m for m in names if label == m or label.startswith(m + "."))
    return module if module == "tl_interp" else module.removeprefix("tl_interp.")


def test_study_specific_names_stay_where_documented() -> None:
    """A study-specific name used in a module its row does not list is a second meaning in the making."""
    bad = []
    for label, fn, _ in MEMBERS:
        module = _module_of(label)
        for p in _params(fn):
            where = STUDY_WHERE.get(p)
            if where is not None and not any(module == w or module.startswith(w + ".") for w in where):
                bad.append(f"{p} ({label}): its row lists {', '.join(where)}")
    assert not bad, ("study-specific names outside the modules their row in docs/vocabulary.md lists (rename, or "
                     "add the module if the meaning is the same):\n" + "\n".join(bad))


def test_every_documented_name_is_used() -> None:
    used = {p for _, fn, _ in MEMBERS for p in _params(fn)}
    stale = sorted(STUDY_PARAMS - used)
    assert not stale, f"study-specific names no public signature uses (remove their rows): {stale}"


def test_concept_parameters_carry_the_table_annotation() -> None:
    from tl_interp.results import Result

    results = {cls.__name__ for cls in _result_classes(Result)}
    bad = []
    for label, fn, _ in MEMBERS:
        hints = _hints(fn)
        for param in _params(fn):
            check = (RESULT_METRIC.get(param) if _on_a_result(label, fn, results) else None) or CHECKS.get(param)
            if check is None or f"{label}:{param}" in ANNOTATION_EXCEPTIONS:
                continue
            hint = hints.get(param, Any)
            if hint is Any or not check(hint):
                bad.append(f"{label}: {param}: {hint}")
    assert not bad, "parameters whose annotation disagrees with docs/vocabulary.md:\n" + "\n".join(bad)


def test_annotation_exceptions_are_still_needed() -> None:
    """Each exception names a parameter that exists and that the table's check would refuse."""
    stale = []
    for key in ANNOTATION_EXCEPTIONS:
        label, param = key.rsplit(":", 1)
        found = [fn for name, fn, _ in MEMBERS if name == label and param in _params(fn)]
        hint = _hints(found[0]).get(param, Any) if found else None
        if not found or (hint is not Any and CHECKS[param](hint)):
            stale.append(key)
    assert not stale, f"stale ANNOTATION_EXCEPTIONS entries (remove them): {stale}"


# The studies and what they are built from (hooks, metrics, collect): functions users call with
# their own arguments. The foundation (sites, positions), the engine's and compat's internals,
# models, training and viz check by hand where they check.
STUDY_PACKAGES = ("tl_interp.ablation", "tl_interp.circuits", "tl_interp.geometry", "tl_interp.hooks",
                  "tl_interp.lens", "tl_interp.metrics", "tl_interp.patching", "tl_interp.similarity",
                  "tl_interp.stats", "tl_interp.steering", "tl_interp.weights", "tl_interp.collect",
                  "tl_interp.engine.collect")
# fixed by the errors branch (raw @jaxtyped(typechecker=beartype) uses, to become @checked)
def test_public_functions_check_their_arguments_at_runtime() -> None:
    unchecked = [label for label, fn, is_function in MEMBERS if is_function and not is_checked(fn)
                 and label.startswith(STUDY_PACKAGES) and _params(fn)]
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


# --- retired names: still accepted for one release, each with a warning ---------------------

def test_every_renamed_alias_is_a_retired_name() -> None:
    """Each ``@renamed`` old name is in the Retired names table, and maps to a documented name."""
    bad = []
    for label, fn, _ in MEMBERS:
        for old, new in getattr(fn, "__tl_interp_renamed__", {}).items():
            if old not in RETIRED or new not in PARAMS | STUDY_PARAMS:
                bad.append(f"{label}: {old}= -> {new}=")
    assert not bad, "@renamed aliases missing from docs/vocabulary.md's tables: " + ", ".join(bad)


# Retired keywords per function (any call of that name, ``*`` for any function), and retired values.
RETIRED_KEYWORDS: dict[str, set[str]] = {
    "*": {"multipliers", "multiplier", "factor", "prompts", "units", "reference_mask"},
    "steer_positions": {"rule"},
    "layer_angles": {"targets", "mask"},
    "compare": {"metrics"},
    "feature_spaces": {"metrics"},
    "figure": {"scale"},  # a result's figure: value_scale= ("symlog"); SteeringReport.figure(scale=) is a float
    "heatmap": {"scale"},
    "result_figure": {"scale"},
    "colored_spans": {"scale"},
    "patch": {"mask"},
    "feature_page": {"n"},
    "predictions": {"k"},
    "collect": {"batch_size"},
    "logit_lens": {"batch_size"},
    "tuned_lens": {"batch_size"},
    "direct_logit_attribution": {"batch_size"},
    "angle_inputs": {"batch_size"},
    "read_activations": {"batch_size"},
    "contrast_vector": {"batch_size"},
    "contrast_vectors": {"batch_size"},
    "pca_vector": {"batch_size"},
    "pca_vectors": {"batch_size"},
    "sae_contrast_vector": {"batch_size"},
}
RETIRED_OVER_VALUES = {"head", "neuron"}  # over=("head",) is ("head_index",)
RETIRED_ATTRIBUTES = {"multipliers"}  # SteeringReport.multipliers is .scales
RETIRED_FLAGS = {"--multipliers"}  # the demos' flag is --scales


def _retired_uses(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """(line, what) of every retired keyword, value or attribute outside ``with pytest.warns``."""
    warned: set[int] = set()
    local = {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}  # a test's own helpers
    for node in ast.walk(tree):
        if isinstance(node, ast.With) and any("warns" in ast.unparse(item.context_expr) for item in node.items):
            warned |= {n.lineno for n in ast.walk(node) if hasattr(n, "lineno")}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and node.lineno not in warned:
            func = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if func in local or func in ("renamed", "retired", "dict"):
                continue  # the aliases themselves; dict(...) rows of a parametrised test say what they pass
            for kw in node.keywords:
                if kw.arg in RETIRED_KEYWORDS["*"] | RETIRED_KEYWORDS.get(func, set()):
                    if func == "figure" and kw.arg == "scale" and not isinstance(kw.value, ast.Constant):
                        continue
                    if func == "figure" and kw.arg == "scale" and not isinstance(kw.value.value, str):
                        continue  # SteeringReport.figure(scale=2.0): a multiplier, today's name
                    yield node.lineno, f"{func}({kw.arg}=...)"
                if kw.arg == "over":
                    values = {c.value for c in ast.walk(kw.value) if isinstance(c, ast.Constant)}
                    if values & RETIRED_OVER_VALUES:
                        yield node.lineno, f"over={ast.unparse(kw.value)}"
        elif isinstance(node, ast.Attribute) and node.attr in RETIRED_ATTRIBUTES and node.lineno not in warned:
            yield node.lineno, f".{node.attr}"
        elif isinstance(node, ast.Constant) and node.value in RETIRED_FLAGS and node.lineno not in warned:
            yield node.lineno, f"the flag {node.value}"


def _own_sources() -> Iterator[Path]:
    for folder in ("demos", "benchmarks", "tests", "tl_interp"):
        yield from (ROOT / folder).rglob("*.py")


def test_retired_names_are_gone_from_our_own_code() -> None:
    """Demos, benchmarks, tests and the package use today's names; a retired name appears only
    in ``@renamed`` aliases and under ``pytest.warns`` (the tests that check it still works)."""
    bad = []
    for path in _own_sources():
        if path == Path(__file__):
            continue
        tree = ast.parse(path.read_text())
        for line, what in _retired_uses(tree):
            bad.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert not bad, "retired names in use (use today's name, see docs/vocabulary.md):\n" + "\n".join(sorted(bad))


def _warns(call: Callable[[], Any]) -> Any:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = call()
    assert any(issubclass(w.category, TlInterpDeprecationWarning) for w in caught), \
        f"no TlInterpDeprecationWarning: {[str(w.message) for w in caught]}"
    return value


def test_retired_attributes_warn() -> None:
    import torch

    from tl_interp.results import Provenance
    from tl_interp.steering import SteeringReport

    report = SteeringReport(torch.zeros(1, 2, 1), ("vector", "scale", "task"), "accuracy", Provenance("toy"),
                            labels={"vector": ("v",), "scale": ("1", "2"), "task": ("t",)},
                            meta={"scales": [1.0, 2.0]})
    assert _warns(lambda: report.multipliers) == [1.0, 2.0]
    states = tl_interp.engine.collect.States({"a": torch.zeros(2, 3)}, batch=None, read_mask=torch.ones(2, 3).bool(),
                                             positions_label="all", reduce=None, model_id="toy")
    assert _warns(lambda: states.mask).all() and _warns(lambda: states.positions) == "all"
    probe = tl_interp.engine.reads.Probe(3, None)
    assert _warns(lambda: probe.position) == 3


def _tiny() -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=8, n_heads=2, d_head=4, n_ctx=8, d_vocab=10, act_fn="relu",
                                  d_mlp=16, seed=0)
    return HookedTransformer(cfg)


def test_renamed_and_retired_keywords_still_work_with_a_warning() -> None:
    """Each renaming of this release: the old keyword gives today's answer, with the warning."""
    import torch
    from torch.testing import assert_close

    model, tokens = _tiny(), torch.tensor([[1, 2, 3, 4], [5, 6, 7, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    name = "blocks.1.hook_resid_post"
    today = tl_interp.collect(model, tokens, name, attention_mask=mask, progress=False)[name]
    old = _warns(lambda: tl_interp.collect(model, tokens, name, attention_mask=mask, batch_size=1,
                                           progress=False))[name]
    assert_close(old, today)
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(0))
    y = x + torch.randn(12, 3, generator=torch.Generator().manual_seed(1))
    sim = _warns(lambda: tl_interp.similarity.compare(x, y, metrics=("cka",), n_permutations=9, n_boot=5,
                                                      progress=False))
    assert sim.labels["metric"] == ("cka",)
    states = torch.randn(3, 4, 5, 6, generator=torch.Generator().manual_seed(2))
    where = torch.tensor([1, 2, 3, 4])
    new = tl_interp.geometry.layer_angles(states, positions=where, attention_mask=torch.ones(4, 5))
    old = _warns(lambda: tl_interp.geometry.layer_angles(states, targets=where, mask=torch.ones(4, 5)))
    assert torch.equal(new.values, old.values)
    assert _warns(lambda: tl_interp.steering.steer_positions(rule="last")) == "last"
    fig = _warns(lambda: tl_interp.viz.figures.heatmap(torch.ones(2, 2), x_labels=["a", "b"], y_labels=["c", "d"],
                                                       x_title="x", y_title="y", scale="symlog"))
    assert fig is not None
    spans = _warns(lambda: tl_interp.viz.html.colored_spans(["a"], [0.5], scale=1.0))
    assert spans == tl_interp.viz.html.colored_spans(["a"], [0.5], color_max=1.0)
    def metric(logits: Tensor) -> Tensor:
        return logits[:, -1, 0].mean()

    sweep = _warns(lambda: tl_interp.patching.sweep(model, tokens, tokens.flip(0), metric, site="z",
                                                    over=("pos", "head"), progress=False))
    assert sweep.axes[-2:] == ("pos", "head_index")
    patched = _warns(lambda: tl_interp.hooks.patch(name, torch.zeros(2, 4, 8), mask=torch.ones(2, 4, 1).bool()))
    assert torch.equal(patched.run(model, tokens), tl_interp.hooks.patch(
        name, torch.zeros(2, 4, 8), entries=torch.ones(2, 4, 1).bool()).run(model, tokens))
