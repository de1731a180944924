"""The three API rules of docs/vocabulary.md ("Top-k, paired arguments, argument order"), checked
on every public function, method and result class, and the renamed calls' behaviour.

Each rule is a checker that returns its violations: the suite runs it on the public API (which
must give none) and on planted violations (which it must name), so a checker that lets
everything through fails here too. The top-k semantics are checked against a brute-force sort
in plain Python; each retired name and old argument order must warn and give the new answer.
"""

import inspect
import typing
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import tl_interp as ti
from tl_interp._checks import is_retired, reordered, retired
from tl_interp.results import Ranking
from tl_interp.errors import OptionError, SelectionError, TlInterpDeprecationWarning, TypeCheckError
from tl_interp.results import Provenance, Result

# -- walking the public API ----------------------------------------------------------------------
_MODULES = [ti] + [getattr(ti, n) for n in ti.__all__ if inspect.ismodule(getattr(ti, n))]


def _subclasses(cls: type) -> set[type]:
    out = {cls}
    for sub in cls.__subclasses__():
        out |= _subclasses(sub)
    return out


def _public_classes() -> set[type]:
    found = {obj for m in _MODULES for n in getattr(m, "__all__", []) if inspect.isclass(obj := getattr(m, n, None))
             and obj.__module__.startswith("tl_interp")}
    return found | _subclasses(Result)  # every result, exported or not (they come back from studies)


def _public_functions() -> Iterator[tuple[str, Callable[..., Any]]]:
    seen: set[int] = set()
    for m in _MODULES:
        for n in getattr(m, "__all__", []):
            fn = getattr(m, n, None)
            if inspect.isfunction(fn) and fn.__module__.startswith("tl_interp") and id(fn) not in seen:
                seen.add(id(fn))
                yield f"{m.__name__}.{n}", fn


def _methods(classes: set[type]) -> Iterator[tuple[str, type, str, Any]]:
    """(label, class, name, the raw attribute) of every public method a class defines itself."""
    for cls in sorted(classes, key=lambda c: c.__qualname__):
        for name, attr in vars(cls).items():
            if not name.startswith("_") and (inspect.isfunction(attr) or isinstance(attr, (classmethod, staticmethod))):
                yield f"{cls.__module__}.{cls.__qualname__}.{name}", cls, name, attr


def _positional(fn: Callable[..., Any]) -> list[str]:
    return [p.name for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name not in ("self", "cls")]


# -- rule 1: one top-k family --------------------------------------------------------------------
# names that mean "the k largest entries of a result"; only `top` may be live, the rest retired
TOPK_NAMES = {"top", "topk", "top_k", "ranking", "ranked", "best", "top_cells", "largest", "most", "highest",
              "top_n", "topn", "rank_by"}


def _returns(fn: Callable[..., Any]) -> Any:
    try:
        return typing.get_type_hints(inspect.unwrap(fn)).get("return")
    except Exception:  # an unresolvable forward reference: read the raw annotation
        return inspect.signature(fn).return_annotation


def topk_violations(classes: set[type], functions: list[tuple[str, Callable[..., Any]]]) -> list[str]:
    """Every live top-k spelling that is not ``top(k, *, absolute, largest) -> Ranking``."""
    bad = []
    for label, cls, name, attr in _methods(classes):
        fn = attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr
        if name not in TOPK_NAMES or is_retired(fn):
            continue
        params = inspect.signature(fn).parameters
        if name != "top":
            bad.append(f"{label}: a second name for top-k (call it top, or retire it with @retired)")
        elif "k" not in params or _positional(fn)[:1] != ["k"] and not isinstance(attr, classmethod):
            bad.append(f"{label}: the count is k, first: {list(params)}")
        elif isinstance(attr, classmethod):
            # a builder named for its selection rule (Circuit.top): the count is k, the sort is absolute=
            if "k" not in params or "absolute" not in params or _returns(fn) not in (cls, cls.__name__):
                bad.append(f"{label}: a top builder takes (scores, k, *, absolute=) and returns {cls.__name__}")
        else:
            ret = _returns(fn)
            options = {n: p for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
            if ret is not Ranking and ret != "Ranking":
                bad.append(f"{label}: returns {ret}, not Ranking")
            if params["k"].default is not None:
                bad.append(f"{label}: k defaults to {params['k'].default}, not None (up to 10 entries)")
            for option in ("absolute", "largest"):
                if option not in options or options[option].default is not True:
                    bad.append(f"{label}: {option}= (keyword-only, default True) missing")
    for label, fn in functions:
        if fn.__name__ in TOPK_NAMES and not is_retired(fn):
            bad.append(f"{label}: a top-k function; rank a result with result.top(k) (or retire it)")
    return bad


def test_every_public_top_k_is_one_method_with_one_signature_and_return_type() -> None:
    bad = topk_violations(_public_classes(), list(_public_functions()))
    assert not bad, "top-k outside the rule of docs/vocabulary.md:\n" + "\n".join(bad)


def test_the_top_k_checker_names_each_kind_of_violation() -> None:
    class Planted(Result):
        def ranking(self, k: int = 10) -> list:  # a second name
            return []

        def top(self, n: int = 3) -> list:  # n, not k; a list, no options
            return []

    @retired("top(k)")
    def best(k: int) -> list:  # retired: allowed
        return []

    def topk(k: int) -> list:  # a live top-k function
        return []

    bad = "\n".join(topk_violations({Planted}, [("planted.best", best), ("planted.topk", topk)]))
    assert "Planted.ranking: a second name" in bad and "Planted.top: the count is k" in bad
    assert "planted.topk: a top-k function" in bad and "planted.best" not in bad


# the same rule, by behaviour: every result's top(k) against a brute-force sort in plain Python
def _reference(values: list[float], k: int, absolute: bool, largest: bool) -> list[int]:
    finite = [i for i, v in enumerate(values) if v == v]
    key = (lambda i: abs(values[i])) if absolute else (lambda i: values[i])
    order = sorted(finite, key=lambda i: (-key(i) if largest else key(i), i))  # ties: the result's order
    return (order + [i for i, v in enumerate(values) if v != v])[:k]


VALUES = [0.5, -3.0, float("nan"), 2.0, -0.5, 3.0, 0.0, 2.0]


def _results() -> dict[str, tuple[Any, Callable[..., Ranking], list[str]]]:
    """name -> (result, its top with the common options, the labels of VALUES' entries in order)."""
    from tl_interp.ablation import AblationResult
    from tl_interp.circuits import EdgeScores, Graph
    from tl_interp.lens import DLAResult
    from tl_interp.patching import PatchingResult
    from tl_interp.steering import SteeringReport
    from tl_interp.weights import Congruence

    v = torch.tensor(VALUES)
    prov = Provenance("m")
    out: dict[str, tuple[Any, Callable[..., Ranking], list[str]]] = {}
    grid = Result(v.view(2, 4), ("layer", "pos"), "m", prov)
    out["Result"] = (grid, grid.top, [f"layer {i // 4}, pos {i % 4}" for i in range(8)])
    patch = PatchingResult(v.view(2, 4), ("layer", "pos"), "m", prov,
                           extras={"base": torch.tensor(0.0), "source": torch.tensor(1.0)})
    out["PatchingResult"] = (patch, patch.top, [f"layer {i // 4}, pos {i % 4}" for i in range(8)])
    edges = Graph(n_layers=1, n_heads=1).edges
    scores = EdgeScores(v, ("edge",), "m", Provenance("m", settings={"graph": {"n_layers": 1, "n_heads": 1},
                                                                        "method": "eap"}),
                        labels={"edge": edges}, extras={"per_prompt": v[None]})
    out["EdgeScores"] = (scores, scores.top, list(edges))
    heads = AblationResult(v.view(2, 4), ("layer", "head_index"), "m", prov,
                           labels={"layer": ("L0", "L1"), "head_index": ("H0", "H1", "H2", "H3")})
    out["AblationResult"] = (heads, heads.top, [f"L{i // 4} H{i % 4}" for i in range(8)])
    dla = DLAResult(torch.stack([v, v], 1), ("component", "batch"), "m", prov,
                    labels={"component": tuple(f"c{i}" for i in range(8))})
    out["DLAResult"] = (dla, dla.top, [f"c{i}" for i in range(8)])
    tokens = tuple(f"t{i}" for i in range(8))
    cong = Congruence(v[None], ("d_mlp", "d_vocab"), "out", prov, labels={"d_mlp": ("L0N0",), "d_vocab": tokens})
    out["Congruence"] = (cong, cong.top, list(tokens))
    report = SteeringReport(v.view(2, 4, 1), ("vector", "scale", "task"), "accuracy", prov,
                            labels={"vector": ("a", "b"), "scale": ("x1", "x2", "x4", "x8"), "task": ("t",)},
                            meta={"vectors": [{}, {}], "scales": [1.0, 2.0, 4.0, 8.0]})
    out["SteeringReport"] = (report, lambda k, **kw: report.top(k, task="t", **kw),
                             [f"{v_} x{s:g}" for v_ in "ab" for s in (1, 2, 4, 8)])
    return out


RESULTS = _results()


@pytest.mark.parametrize("name", sorted(RESULTS))
@pytest.mark.parametrize("absolute, largest", [(True, True), (False, True), (False, False), (True, False)])
@pytest.mark.parametrize("k", [1, 3, 8])
def test_every_result_ranks_like_a_brute_force_sort(name: str, absolute: bool, largest: bool, k: int) -> None:
    _, top, labels = RESULTS[name]
    ranking = top(k, absolute=absolute, largest=largest)
    expected = _reference(VALUES, k, absolute, largest)
    assert isinstance(ranking, Ranking) and ranking.labels == tuple(labels[i] for i in expected)
    got, want = torch.tensor(ranking.values), torch.tensor([VALUES[i] for i in expected])
    torch.testing.assert_close(got, want, equal_nan=True, rtol=0, atol=0)
    assert len(repr(ranking).splitlines()) == 1 and len(ranking.to_frame()) == len(expected)


@pytest.mark.parametrize("name", sorted(RESULTS))
@pytest.mark.parametrize("k", [0, -1, True, 2.5])
def test_every_top_refuses_a_k_that_is_not_a_positive_int(name: str, k: Any) -> None:
    _, top, _ = RESULTS[name]
    # one mistake, one class (errors.py): a count below 1 is a SelectionError, a non-int a TypeCheckError
    error, message = (TypeCheckError, r"\.top: k must be an int") if not type(k) is int else \
        (SelectionError, r"\.top: k=-?\d+ is out of range; choose k >= 1")
    with pytest.raises(error, match=message):
        top(k)


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_every_top_refuses_more_entries_than_there_are_saying_how_many(name: str) -> None:
    # one rule with the lens's top_k and weights.top_k: a count beyond what exists is refused, never cut
    _, top, _ = RESULTS[name]
    assert len(top(len(VALUES))) == len(VALUES)
    with pytest.raises(SelectionError, match=rf"\.top: k={len(VALUES) + 1} is out of range: there are {len(VALUES)} "
                       rf"entries; choose 1 <= k <= {len(VALUES)}"):
        top(len(VALUES) + 1)


def test_ranking_of_and_per_row_refuse_more_entries_than_there_are() -> None:
    with pytest.raises(SelectionError, match=r"Ranking.of: k=4 is out of range: there are 3 entries; choose 1 <= k <= 3"):
        Ranking.of(torch.ones(3), ["a", "b", "c"], 4)
    with pytest.raises(SelectionError, match=r"Ranking.per_row: k=4 is out of range: there are 3 entries"):
        Ranking.per_row(torch.ones(2, 3), ["r0", "r1"], ["a", "b", "c"], 4)
    assert len(Ranking.per_row(torch.ones(2, 3), ["r0", "r1"], ["a", "b", "c"], 3)) == 6


def _printable() -> dict[str, Any]:
    """Results with everything their summaries print, smaller than a summary's default 10 entries."""
    from tl_interp.ablation import AblationResult
    from tl_interp.circuits import EdgeScores, Graph
    from tl_interp.lens import DLAResult

    prov = Provenance("m")
    edges = Graph(n_layers=1, n_heads=1).edges
    return {
        "AblationResult": AblationResult(torch.tensor([[0.5, -1.0]]), ("layer", "head_index"), "m", prov,
                                         extras={"base": torch.tensor(1.0), "ci_low": torch.zeros(1, 2),
                                                 "ci_high": torch.ones(1, 2)}),
        "DLAResult": DLAResult(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), ("component", "batch"), "m", prov,
                               labels={"component": ("c0", "c1")},
                               extras={"logit": torch.zeros(2), "constant": torch.zeros(2),
                                       "renormalised": torch.zeros(2, 2), "centring": torch.zeros(2)}),
        "EdgeScores": EdgeScores(torch.tensor(VALUES), ("edge",), "m",
                                 Provenance("m", settings={"graph": {"n_layers": 1, "n_heads": 1}, "method": "eap"}),
                                 labels={"edge": edges}, extras={"per_prompt": torch.tensor(VALUES)[None],
                                                                 "clean": torch.ones(1), "corrupted": torch.zeros(1)}),
    }


@pytest.mark.parametrize("name", ["DLAResult", "EdgeScores"])
def test_a_summary_lists_up_to_ten_by_default_and_refuses_a_k_beyond_what_exists(name: str) -> None:
    result = _printable()[name]
    n = result.values.shape[0]
    listed = [line for line in result.summary().splitlines() if line.startswith("  ")]
    assert len(listed) == n < 10
    assert len([line for line in result.summary(1).splitlines() if line.startswith("  ")]) == 1
    with pytest.raises(SelectionError, match=rf"{name}.summary: k={n + 1} is out of range: there are {n} entries"):
        result.summary(n + 1)


def test_reprs_and_pages_of_results_smaller_than_their_headlines_still_show() -> None:
    # a headline's 3 and a page's 10 are display lengths, not a user's k: a 2-entry result shows both entries
    small = _printable()
    heads, dla = small["AblationResult"], small["DLAResult"]
    assert "most damaging: 0 1 -1, 0 0 +0.5" in repr(heads) and "0 0: +0.5" in heads.summary()
    assert "0.5" in heads._repr_html_()
    assert "c0" in repr(dla) and "c0" in dla._repr_html_()


def test_a_ranking_reads_like_the_lists_it_replaces_and_keeps_its_columns() -> None:
    heads = RESULTS["AblationResult"][0]
    r = heads.top(2, absolute=False, largest=False)
    assert r == [("L0 H1", -3.0), ("L1 H0", -0.5)]
    assert dict(r) == {"L0 H1": -3.0, "L1 H0": -0.5} and r[0] == ("L0 H1", -3.0)
    frame = r.to_frame()
    assert list(frame.columns) == ["rank", "label", "effect", "index", "ci_low", "ci_high"]
    assert frame["index"].tolist() == [(0, 1), (1, 0)]
    per_layer = RESULTS["Result"][0].top(1, per="layer")
    assert per_layer.row_labels == ("0", "1") and per_layer.labels == ("pos 1", "pos 1")
    with pytest.raises(OptionError, match=r"per names one of this result's axes \('layer', 'pos'\)"):
        RESULTS["Result"][0].top(1, per="head")


def test_congruence_ranks_each_neuron_on_its_own() -> None:
    from tl_interp.weights import Congruence

    values = torch.tensor([[1.0, -4.0, 2.0], [3.0, 0.5, -1.0]])
    c = Congruence(values, ("d_mlp", "d_vocab"), "out", Provenance("m"),
                   labels={"d_mlp": ("L0N0", "L0N1"), "d_vocab": ("a", "b", "c")})
    r = c.top(2, absolute=False)
    assert r.by_row() == {"L0N0": [("c", 2.0), ("a", 1.0)], "L0N1": [("a", 3.0), ("b", 0.5)]}
    assert c.top(1, neurons=["L0N1"], absolute=False, largest=False) == [("c", -1.0)]
    assert c.top(1, per=None) == [("d_mlp L0N0, d_vocab b", -4.0)]


@pytest.mark.parametrize("absolute, largest", [(True, True), (False, True), (False, False)])
def test_per_row_rankings_equal_the_brute_force_sort_row_by_row(absolute: bool, largest: bool) -> None:
    # rows with ties at the k-th entry, NaNs, infinities and fewer real entries than k take the
    # exact path; the rest the one-topk fast path: both must equal the reference sort
    g = torch.Generator().manual_seed(0)
    values = torch.randint(-3, 4, (40, 9), generator=g).double()  # many ties
    values[::5] = torch.randn(8, 9, generator=g, dtype=torch.float64)  # rows without ties
    values[1, 2], values[2, :7], values[3, 4], values[4, 0] = float("nan"), float("nan"), float("inf"), -float("inf")
    r = Ranking.per_row(values, [f"r{i}" for i in range(40)], [f"c{j}" for j in range(9)], 3, absolute=absolute,
                        largest=largest)
    for i, row in enumerate(values.tolist()):
        assert list(r.by_row()[f"r{i}"].columns["index"]) == _reference(row, 3, absolute, largest), i


def test_circuit_top_takes_the_edges_of_the_scores_top_k() -> None:
    from tl_interp.circuits import Circuit

    scores = RESULTS["EdgeScores"][0]
    for absolute in (True, False):
        circuit = Circuit.top(scores, 3, absolute=absolute, prune=False)
        assert set(circuit.edges) == set(scores.top(3, absolute=absolute).labels)
    with pytest.warns(TlInterpDeprecationWarning, match=r"\(n=\.\.\.\) is now k="):
        assert Circuit.top(scores, n=3, prune=False).edges == Circuit.top(scores, 3, prune=False).edges


# -- retired top-k names: each warns and gives its old answer --------------------------------------
def test_retired_top_k_names_warn_and_answer_as_before() -> None:
    heads, dla, cong = RESULTS["AblationResult"][0], RESULTS["DLAResult"][0], RESULTS["Congruence"][0]
    report, grid = RESULTS["SteeringReport"][0], RESULTS["Result"][0]
    with pytest.warns(TlInterpDeprecationWarning, match="ranking is now top"):
        rows = heads.ranking(2)  # dicts, most damaging first (higher is better by default)
    assert [(r["unit"], r["index"], r["effect"]) for r in rows] == [("L0 H1", (0, 1), -3.0), ("L1 H0", (1, 0), -0.5)]
    with pytest.warns(TlInterpDeprecationWarning):
        assert dla.ranking(2) == list(dla.top(2)) and isinstance(dla.ranking(2), list)
    with pytest.warns(TlInterpDeprecationWarning, match="top_k is now"):
        table = cong.top_k(2)
    old = torch.topk(cong.values, 2).indices[0].tolist()  # the old TopK: torch.topk's order (NaN first)
    assert type(table).__name__ == "TopK" and table.labels == (tuple(f"t{i}" for i in old),)
    with pytest.warns(TlInterpDeprecationWarning, match="top_k is now"):
        assert ti.weights.top_k(torch.tensor([[1.0, 3.0]]), 1).labels == (("1",),)
    with pytest.warns(TlInterpDeprecationWarning, match="best is now"):
        assert report.best("t") == {"vector": "b", "scale": 2.0, "accuracy": 3.0}
    with pytest.warns(TlInterpDeprecationWarning, match="top_cells is now"):
        assert grid.top_cells(1) == [("[0, 1]", -3.0)]
    with pytest.warns(TlInterpDeprecationWarning, match="topk is now top_activations"):
        old = ti.viz.topk([["a", "b"]], [torch.tensor([[0.0, 1.0], [2.0, 0.0]])], k=1)
    assert old.data["order"] == ti.viz.top_activations([["a", "b"]], [torch.tensor([[0.0, 1.0], [2.0, 0.0]])],
                                                       k=1).data["order"]


# -- rule 2: paired arguments ---------------------------------------------------------------------
ALLOWED_PAIRS = {("X", "Y"), ("x", "y"), ("a", "b")}


def _jaxtyping_dims(hint: Any) -> int | None:
    dims = getattr(hint, "dims", None)
    return len(dims) if dims is not None else None


def paired_violations(functions: list[tuple[str, Callable[..., Any]]]) -> list[str]:
    """Two single-letter positional parameters in a row of one type (a pair of the same role; not
    counts) that are not X, Y / x, y / a, b (sets)."""
    bad = []
    for label, fn in functions:
        names = _positional(fn)
        try:
            hints = typing.get_type_hints(inspect.unwrap(fn), include_extras=True)
        except Exception:
            hints = {}
        for first, second in zip(names, names[1:]):
            if len(first) != 1 or len(second) != 1 or not first.isalpha() or not second.isalpha():
                continue
            if str(hints.get(first)) != str(hints.get(second)) or hints.get(first) is int:
                continue  # different roles (states and a count k), or two counts
            pair = (first, second)
            if pair not in ALLOWED_PAIRS:
                bad.append(f"{label}({first}, {second}): paired arguments are X, Y (matrices), x, y (samples) "
                           "or a, b (sets)")
            elif pair == ("a", "b") and not any(w in str(hints.get("a", "")) for w in ("Iterable", "set", "Set")):
                bad.append(f"{label}(a, b): a, b name two sets; samples are x, y")
            elif pair == ("X", "Y") and _jaxtyping_dims(hints.get("X")) == 1:
                bad.append(f"{label}(X, Y): 1-D samples are x, y")
            elif pair == ("x", "y") and (_jaxtyping_dims(hints.get("x")) or 0) >= 2:
                bad.append(f"{label}(x, y): matrices of paired rows are X, Y")
    return bad


def _all_callables() -> list[tuple[str, Callable[..., Any]]]:
    methods = [(label, attr.__func__ if isinstance(attr, (classmethod, staticmethod)) else attr)
               for label, _, _, attr in _methods(_public_classes())]
    return list(_public_functions()) + methods


def test_paired_arguments_follow_one_rule() -> None:
    bad = paired_violations(_all_callables())
    assert not bad, "\n".join(bad)


def test_the_paired_checker_names_each_kind_of_violation() -> None:
    from collections.abc import Iterable

    from jaxtyping import Float
    from torch import Tensor

    def fit(A: Tensor, B: Tensor) -> None: ...
    def ttest(a: Tensor, b: Tensor) -> None: ...
    def jaccard(a: Iterable[int], b: Iterable[int]) -> None: ...
    def corr(X: Float[Tensor, " n"], Y: Float[Tensor, " n"]) -> None: ...
    def cka(x: Float[Tensor, "n d"], y: Float[Tensor, "n d"]) -> None: ...

    bad = "\n".join(paired_violations([(f.__name__, f) for f in (fit, ttest, jaccard, corr, cka)]))
    assert "fit(A, B)" in bad and "ttest(a, b): a, b name two sets" in bad and "jaccard" not in bad
    assert "corr(X, Y): 1-D" in bad and "cka(x, y): matrices" in bad


@pytest.mark.parametrize("call, old, new", [
    (lambda **kw: ti.geometry.shift_residual(**kw), ("A", "B"), ("X", "Y")),
    (lambda **kw: ti.geometry.difference_pca(**kw, k=2), ("A", "B"), ("X", "Y")),
    (lambda **kw: ti.similarity.match_units(**kw).pairs, ("A", "B"), ("X", "Y")),
    (lambda **kw: ti.stats.paired_ttest(**kw).statistic, ("a", "b"), ("x", "y")),
    (lambda **kw: ti.stats.hedges_g(**kw), ("a", "b"), ("x", "y")),
])
def test_old_paired_keywords_warn_and_give_the_same_answer(call: Callable[..., Any], old: tuple, new: tuple) -> None:
    g = torch.Generator().manual_seed(0)
    first = torch.randn(12, 4, generator=g, dtype=torch.float64)
    second = first @ torch.linalg.qr(torch.randn(4, 4, generator=g, dtype=torch.float64)).Q + 0.1
    if old == ("a", "b"):
        first, second = first[:, 0], second[:, 1]
    with pytest.warns(TlInterpDeprecationWarning, match=rf"\({old[0]}=\.\.\.\) is now {new[0]}="):
        before = call(**{old[0]: first, old[1]: second})
    torch.testing.assert_close(before, call(**{new[0]: first, new[1]: second}), rtol=0, atol=0)


# -- rule 3: argument order -----------------------------------------------------------------------
DATA = {"inputs", "clean", "corrupted", "positive", "negative", "tasks", "prompt", "ids"}
APPLIED = {"where", "vectors", "vector", "scales", "circuits", "scores", "subspaces", "features", "feature", "edit"}
MEASURED = {"metric", "answers"}


def order_violations(functions: list[tuple[str, Callable[..., Any]]]) -> list[str]:
    """Model first (its SAE next), then data, then what is applied, then what is measured, then
    options by name (a positional parameter with a default is data, applied or measured)."""
    bad = []
    for label, fn in functions:
        names = _positional(fn)
        if "model" not in names and "sae" not in names:
            continue
        if "model" in names and names[0] != "model":
            bad.append(f"{label}({', '.join(names)}): the model comes first")
            continue
        if "sae" in names and "model" in names and names.index("sae") != 1:
            bad.append(f"{label}({', '.join(names)}): the SAE comes right after the model")
        params = inspect.signature(fn).parameters
        options = [n for n in names if params[n].default is not inspect.Parameter.empty
                   and n not in DATA | APPLIED | MEASURED]
        if options and "model" in names:
            bad.append(f"{label}({', '.join(names)}): options {options} are keyword-only")
        groups = [[i for i, n in enumerate(names) if n in group] for group in (DATA, APPLIED, MEASURED)]
        for (earlier, e_name), (later, l_name) in [((groups[0], "the data"), (groups[1], "what is applied")),
                                                   ((groups[0], "the data"), (groups[2], "what is measured")),
                                                   ((groups[1], "what is applied"), (groups[2], "what is measured"))]:
            if earlier and later and max(earlier) > min(later):
                bad.append(f"{label}({', '.join(names)}): {e_name} before {l_name}")
    return bad


def test_argument_order_follows_one_rule() -> None:
    bad = order_violations(_all_callables())
    assert not bad, "\n".join(bad)


def test_the_order_checker_names_each_kind_of_violation() -> None:
    def curve(scores: Any, model: Any, clean: Any) -> None: ...
    def card(model: Any, inputs: Any, sae: Any) -> None: ...
    def evaluate(model: Any, vectors: Any, tasks: Any) -> None: ...
    def faithfulness(model: Any, clean: Any, metric: Any, circuits: Any) -> None: ...
    def sweep(model: Any, clean: Any, corrupted: Any, metric: Any) -> None: ...
    def scan(model: Any, inputs: Any, metric: Any, n_boot: int = 100) -> None: ...

    bad = "\n".join(order_violations([(f.__name__, f) for f in (curve, card, evaluate, faithfulness, sweep, scan)]))
    assert "curve(scores, model, clean): the model comes first" in bad
    assert "card(model, inputs, sae): the SAE comes right after" in bad
    assert "evaluate(model, vectors, tasks): the data before what is applied" in bad
    assert "faithfulness(model, clean, metric, circuits): what is applied before what is measured" in bad
    assert "scan(model, inputs, metric, n_boot): options ['n_boot'] are keyword-only" in bad
    assert "sweep" not in bad


def test_reordered_accepts_only_an_order_the_arguments_reveal() -> None:
    @reordered(("b", "a"), lambda args: len(args) >= 2 and isinstance(args[0], str))
    def pair(a: int, b: str, c: int = 0) -> str:
        return f"{a}{b}{c}"

    with pytest.warns(TlInterpDeprecationWarning, match=r"pair\(b, a, \.\.\.\) is now .*pair\(a, b, \.\.\.\)"):
        assert pair("x", 1, 2) == "1x2"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pair(1, "x") == "1x0"
    with pytest.raises(OptionError, match="a given twice"):
        pair("x", 1, a=2)


def test_an_option_that_was_positional_warns_and_is_read_by_name() -> None:
    model = ti.models.load("ordinal-4l")
    with pytest.warns(TlInterpDeprecationWarning, match=r"answer_token\(model, answer, \*, context=, \.\.\.\)"):
        assert ti.steering.answer_token(model, "four", " (here)") == ti.steering.answer_token(model, "four")
    with pytest.raises(ti.InputError, match=r"evaluate \(here\): the answer"), pytest.warns(TlInterpDeprecationWarning):
        ti.steering.answer_token(model, "four five", " (here)")


@pytest.fixture(scope="module")
def ordinal() -> Any:
    return ti.models.load("ordinal-4l")


def test_steering_evaluate_in_the_old_order_warns_and_gives_the_same_report(ordinal: Any) -> None:
    from tl_interp.steering import Controls, SteeringVector

    v = SteeringVector(torch.randn(128, generator=torch.Generator().manual_seed(0)), "blocks.2.hook_resid_pre",
                       name="v")
    tasks = {"numbers": [("one , two ,", "three"), ("two , three ,", "four")]}
    kw = dict(controls=Controls(random_seeds=(), unrelated_prompts=()), n_boot=20, progress=False)
    new = ti.steering.evaluate(ordinal, tasks, v, [0.0, 4.0], **kw)
    with pytest.warns(TlInterpDeprecationWarning, match=r"evaluate\(model, vectors, tasks, \.\.\.\) is now"):
        old = ti.steering.evaluate(ordinal, v, tasks, [0.0, 4.0], **kw)
    assert torch.equal(old.values, new.values) and old.labels == new.labels
    # an old order the arguments don't reveal (tasks as a list) meets the new signature's checks
    with pytest.raises(TypeCheckError, match="tasks"):
        ti.steering.evaluate(ordinal, v, list(tasks["numbers"]), [1.0], **kw)


def test_faithfulness_in_the_old_orders_warns_and_gives_the_same_values() -> None:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=8, d_vocab=10, act_fn="relu",
                                  d_mlp=32, seed=0)
    model = HookedTransformer(cfg)
    clean, corrupt = torch.tensor([[1, 2, 3, 4], [2, 3, 4, 1]]), torch.tensor([[1, 2, 5, 4], [2, 3, 6, 1]])
    metric = ti.metrics.logit_diff(torch.tensor([3, 4]), torch.tensor([5, 6]))
    every = ti.circuits.graph(model).edges
    new = ti.circuits.faithfulness(model, clean, corrupt, [every, every[:7]], metric, progress=False)
    with pytest.warns(TlInterpDeprecationWarning, match=r"faithfulness\(model, circuits, clean, corrupted, \.\.\.\)"):
        old = ti.circuits.faithfulness(model, [every, every[:7]], clean, corrupt, metric, progress=False)
    assert torch.equal(old.values, new.values)
    scores = ti.circuits.attribute(model, clean, corrupt, metric, method="eap", progress=False)
    new_curve = ti.circuits.faithfulness_curve(model, clean, corrupt, scores, metric, budgets=(0.1, 1.0), n_boot=10,
                                               progress=False)
    with pytest.warns(TlInterpDeprecationWarning, match=r"faithfulness_curve\(scores, model, clean, corrupted"):
        old_curve = ti.circuits.faithfulness_curve(scores, model, clean, corrupt, metric, budgets=(0.1, 1.0),
                                                   n_boot=10, progress=False)
    assert torch.equal(old_curve.values, new_curve.values)


def test_sae_studies_in_the_old_order_warn_and_give_the_same_result(ordinal: Any) -> None:
    sae = ti.models.load_sae("ordinal-4l-res-l2")
    prompts = ["one, two, three,", "march, april,"]
    kw = dict(answers=["four", "may"], n_boot=20, progress=False)
    new = ti.ablation.feature_ablation(ordinal, sae, prompts, [5, 17], **kw)
    with pytest.warns(TlInterpDeprecationWarning, match=r"feature_ablation\(sae, model, \.\.\.\) is now"):
        old = ti.ablation.feature_ablation(sae, ordinal, prompts, [5, 17], **kw)
    assert torch.equal(old.values, new.values)
    with pytest.warns(TlInterpDeprecationWarning, match=r"feature_card\(sae, model, \.\.\.\)"):
        card = ti.viz.feature_card(sae, ordinal, prompts, 5, answers=["four", "may"])
    assert card.html() == ti.viz.feature_card(ordinal, sae, prompts, 5, answers=["four", "may"]).html()


def _resolve(dotted: str) -> Any:
    """The object a ``ti.a.b.C`` name stands for, or None if there is no such name."""
    import importlib

    obj: Any = importlib.import_module("tl_interp")
    for part in dotted.split(".")[1:]:
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def test_every_exported_class_is_named_by_a_name_that_exists() -> None:
    # errors and reprs name a class by public_name: Ranking, defined in the foundation's private
    # _ranking module and exported by ti.results, was called ti.Ranking, which does not exist
    import importlib
    import pkgutil

    from tl_interp._checks import public_name

    bad = []
    for info in pkgutil.walk_packages(importlib.import_module("tl_interp").__path__, "tl_interp."):
        if any(part.startswith("_") for part in info.name.split(".")) or info.name.startswith(
                ("tl_interp.distributed", "tl_interp.cli")):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name, None)
            if inspect.isclass(obj) and getattr(obj, "__module__", "").startswith("tl_interp"):
                if _resolve(public_name(obj)) is not obj:
                    bad.append(f"{info.name}.{name} is named {public_name(obj)}")
    assert not bad, "exported classes whose public name does not resolve to them:\n" + "\n".join(sorted(set(bad)))
    assert public_name(Ranking) == "ti.results.Ranking" and public_name(Ranking.of) == "ti.results.Ranking.of"
