"""One mistake raises one error class, in every public function (issue 24, "Vocabulary, finished").

errors.py's table is the contract: a layer, position, head, feature or count of items to pick
(``k``, ``top_k``) out of range is a ``SelectionError`` wherever it is given; a tensor of the
wrong shape is a ``ShapeError`` and an argument of the wrong type a ``TypeCheckError`` (never
jaxtyping's or beartype's own exceptions); and messages name the public entry point a user
called (``ti.hooks.add``), never a private module (``ti.hooks._steer.add``).

The walks below cover the whole public API: every public callable that takes ``k`` / ``top_k``
/ ``layer`` / ``layers`` must have an out-of-range probe here (a new one fails the completeness
test until it gets one), every ``@checked`` function is called with a wrong-typed argument, and
every function of the package that declares tensor shapes in its signature is called with a
wrong shape or checked to be ``@checked``. The other mistakes of the table (too few prompts, a
name never cached, a request the model cannot honour, a call of the wrong form) are probed
where two functions used to disagree.
"""

import importlib
import inspect
import pkgutil
import re
import typing
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

import tl_interp as ti
from tests.conftest import gpt2_style
from tests.test_vocabulary import _members
from tl_interp._checks import is_checked
from tl_interp.errors import SelectionError, ShapeError, TlInterpError, TypeCheckError

N_LAYERS, D_VOCAB = 2, 61  # gpt2_style()
PRIVATE_PATH = re.compile(r"\b(?:ti|tl_interp)(?:\.\w+)*\._\w")


@pytest.fixture(scope="module")
def model() -> Any:
    return gpt2_style()


@pytest.fixture(scope="module")
def tokens() -> torch.Tensor:
    return torch.randint(1, D_VOCAB, (4, 6), generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def results(model: Any, tokens: torch.Tensor) -> dict[str, Any]:
    """One small result of every kind whose methods take ``k`` / ``layer``."""
    corrupted = tokens.flip(0)
    metric = ti.metrics.answer_logprob(torch.full((4,), 3))
    sae_lens = pytest.importorskip("sae_lens")
    sae = sae_lens.StandardSAE(sae_lens.StandardSAEConfig(d_in=32, d_sae=64))
    scores = ti.circuits.attribute(model, tokens, corrupted, metric, method="eap", progress=False)
    a, b = torch.randn(12, 8, generator=torch.Generator().manual_seed(1)), torch.randn(12, 8)
    return {
        "patching": ti.patching.sweep(model, tokens, corrupted, metric, site="resid_pre", progress=False),
        "ablation": ti.ablation.scan(model, tokens, metric, site="z", progress=False),
        "dla": ti.lens.direct_logit_attribution(model, tokens, 3, by="head", progress=False),
        "edges": scores,
        "stability": ti.circuits.stability(scores, k=5, n_boot=20),
        "congruence": ti.weights.congruence(model, 0),
        "folded": ti.weights.fold(model),
        "paired": ti.geometry.paired(a, b, n_permutations=20, n_boot=20, progress=False),
        "translators": ti.lens.Translators.identity(N_LAYERS, 32),
        "vector": ti.steering.SteeringVector(sae.W_dec[5].detach().clone(), "blocks.0.hook_resid_pre"),
        "sae": sae,
        "a": a, "b": b,
    }


# --- 1. a selection or count out of range: SelectionError, in every public function ------------
# public callable (as _members() names it) -> probes: (model, tokens, results) -> an out-of-range call
Probe = Callable[[Any, torch.Tensor, dict[str, Any]], Any]
METRIC = ti.metrics.answer_logprob(torch.full((4,), 3))
OUT_OF_RANGE: dict[str, list[Probe]] = {
    "tl_interp.site": [lambda m, t, r: ti.site("z", -1)],
    "tl_interp.patching.sweep": [lambda m, t, r: ti.patching.sweep(m, t, t.flip(0), METRIC, layers=[N_LAYERS]),
                                 lambda m, t, r: ti.patching.sweep(m, t, t.flip(0), METRIC, layers=[-1])],
    "tl_interp.patching.attribution": [
        lambda m, t, r: ti.patching.attribution(m, t, t.flip(0), METRIC, layers=[N_LAYERS])],
    "tl_interp.patching.PatchingResult.top": [lambda m, t, r: r["patching"].top(0)],
    "tl_interp.ablation.scan": [lambda m, t, r: ti.ablation.scan(m, t, METRIC, layers=[5])],
    "tl_interp.ablation.AblationResult.ranking": [lambda m, t, r: r["ablation"].ranking(0)],
    "tl_interp.ablation.AblationResult.top": [lambda m, t, r: r["ablation"].top(0)],
    "tl_interp.results.Result.top": [lambda m, t, r: r["patching"].top(-1, by="values"),
                                     lambda m, t, r: ti.results.Result.top(r["ablation"], 0)],
    "tl_interp.weights.Congruence.top": [lambda m, t, r: r["congruence"].top(0)],
    "tl_interp.lens.DLAResult.top": [lambda m, t, r: r["dla"].top(0)],
    "tl_interp.viz.top_activations": [
        lambda m, t, r: ti.viz.top_activations([["a", "b"]], [torch.ones(2, 3)], k=0),
        lambda m, t, r: ti.viz.top_activations([["a", "b"], ["c"]], [torch.ones(2, 3), torch.ones(1, 3)], k=3),
        lambda m, t, r: ti.viz.top_activations([["a", "b"]], [torch.ones(2, 3)], k=3, layout="tokens")],
    "tl_interp.steering.SteeringReport.top": [lambda m, t, r: _steering_report().top(0, task="t")],
    "tl_interp.steering.decompose": [lambda m, t, r: ti.steering.decompose(r["vector"], r["sae"], k=0),
                                     lambda m, t, r: ti.steering.decompose(r["vector"], r["sae"], k=65)],
    "tl_interp.results.Result.top_cells": [lambda m, t, r: r["patching"].top_cells(-1)],
    "tl_interp.viz.attention": [lambda m, t, r: ti.viz.attention(m, t[0], layer=N_LAYERS)],
    "tl_interp.viz.topk": [lambda m, t, r: ti.viz.topk([["a", "b"]], [torch.ones(2, 3)], k=0)],
    "tl_interp.viz.predictions": [lambda m, t, r: ti.viz.predictions(m, t[0], top_k=0),
                                  lambda m, t, r: ti.viz.predictions(m, t[0], top_k=D_VOCAB + 1)],
    "tl_interp.viz.feature_card": [lambda m, t, r: ti.viz.feature_card(r["sae"], m, t, 0, k=0)],
    "tl_interp.viz.feature_page": [lambda m, t, r: ti.viz.feature_page(r["sae"], m, t, n_features=0),
                                   lambda m, t, r: ti.viz.feature_page(r["sae"], m, t, n_features=65),
                                   lambda m, t, r: ti.viz.feature_page(r["sae"], m, t, k=0)],
    "tl_interp.similarity.mutual_knn": [lambda m, t, r: ti.similarity.mutual_knn(r["a"], r["b"], k=0)],
    "tl_interp.similarity.knn_chance": [lambda m, t, r: ti.similarity.knn_chance(10, 10)],
    "tl_interp.similarity.jaccard_topk": [lambda m, t, r: ti.similarity.jaccard_topk(r["a"][0], r["b"][0], k=9)],
    "tl_interp.geometry.paired": [lambda m, t, r: ti.geometry.paired(r["a"], r["b"], k=50, progress=False)],
    "tl_interp.geometry.PairedGeometry.angle_histogram": [lambda m, t, r: r["paired"].angle_histogram(layer=5)],
    "tl_interp.geometry.difference_pca": [lambda m, t, r: ti.geometry.difference_pca(r["a"], r["b"], k=50)],
    "tl_interp.geometry.low_rank": [lambda m, t, r: ti.geometry.low_rank(r["a"], 0)],
    "tl_interp.weights.FoldedWeights.mlp_in": [lambda m, t, r: r["folded"].mlp_in(N_LAYERS)],
    "tl_interp.weights.FoldedWeights.mlp_out": [lambda m, t, r: r["folded"].mlp_out(-1)],
    "tl_interp.weights.mlp_in": [lambda m, t, r: ti.weights.mlp_in(m, N_LAYERS)],
    "tl_interp.weights.mlp_out": [lambda m, t, r: ti.weights.mlp_out(m, 7)],
    "tl_interp.weights.congruence": [lambda m, t, r: ti.weights.congruence(m, N_LAYERS),
                                     lambda m, t, r: ti.weights.congruence(m, 0, neurons=[9999])],
    "tl_interp.weights.Congruence.top_k": [lambda m, t, r: r["congruence"].top_k(0),
                                           lambda m, t, r: r["congruence"].top_k(D_VOCAB + 1)],
    "tl_interp.weights.top_k": [lambda m, t, r: ti.weights.top_k(torch.zeros(2, 3), 4)],
    "tl_interp.lens.logit_lens": [lambda m, t, r: ti.lens.logit_lens(m, t, layers=[9], progress=False),
                                  lambda m, t, r: ti.lens.logit_lens(m, t, top_k=0, progress=False),
                                  lambda m, t, r: ti.lens.logit_lens(m, t, top_k=D_VOCAB + 1, progress=False)],
    "tl_interp.lens.tuned_lens": [
        lambda m, t, r: ti.lens.tuned_lens(m, t, translators=r["translators"], layers=[9], progress=False),
        lambda m, t, r: ti.lens.tuned_lens(m, t, translators=r["translators"], top_k=0, progress=False)],
    "tl_interp.lens.DLAResult.ranking": [lambda m, t, r: r["dla"].ranking(0)],
    "tl_interp.lens.DLAResult.summary": [lambda m, t, r: r["dla"].summary(0)],
    "tl_interp.lens.Translators.translate": [lambda m, t, r: r["translators"].translate(torch.zeros(32), 5)],
    "tl_interp.circuits.EdgeScores.top": [lambda m, t, r: r["edges"].top(0)],
    "tl_interp.circuits.EdgeScores.summary": [lambda m, t, r: r["edges"].summary(-2)],
    "tl_interp.circuits.stability": [lambda m, t, r: ti.circuits.stability(r["edges"], k=10**6)],
    "tl_interp.circuits.EdgeStability.unstable": [lambda m, t, r: r["stability"].unstable(-1),
                                                  lambda m, t, r: r["stability"].unstable(10**6)],
    # heads / positions / features out of range, through the hook factories every study uses
    "tl_interp.hooks.zero_ablate": [
        lambda m, t, r: ti.hooks.zero_ablate(ti.site("z", 0), heads=[9]).run(m, t),
        lambda m, t, r: ti.hooks.zero_ablate(ti.site("resid_pre", 0), positions=[40]).run(m, t)],
    "tl_interp.hooks.clamp_features": [
        lambda m, t, r: ti.hooks.sae_splice(_sae_at(r["sae"]), ti.hooks.clamp_features(500, 1.0)).run(m, t)],
    "tl_interp.ablation.feature_ablation": [
        lambda m, t, r: ti.ablation.feature_ablation(_sae_at(r["sae"]), m, t, [], progress=False)],
    "tl_interp.circuits.Circuit.top": [lambda m, t, r: ti.circuits.Circuit.top(r["edges"], 10**6)],
    "tl_interp.circuits.Circuit.greedy": [lambda m, t, r: ti.circuits.Circuit.greedy(r["edges"], -1)],
    "tl_interp.results.Ranking.of": [lambda m, t, r: ti.results.Ranking.of(torch.ones(3), ["a", "b", "c"], 0)],
    "tl_interp.results.Ranking.per_row": [
        lambda m, t, r: ti.results.Ranking.per_row(torch.ones(2, 3), ["r0", "r1"], ["a", "b", "c"], 0)],
    "tl_interp.viz.lens.dla_figure": [lambda m, t, r: ti.viz.lens.dla_figure(r["dla"], k=0),
                                      lambda m, t, r: ti.viz.lens.dla_figure(_dla_by_layer(m, t), k=10**3)],
    "tl_interp.ablation.saes.site_activations": [
        lambda m, t, r: ti.ablation.saes.site_activations(m, N_LAYERS, t, torch.ones_like(t))],
}
# Callables whose k / layer parameters are not a user's selection, with why (no probe needed).
NOT_A_SELECTION = {
    "tl_interp.compat.frozen_prefix_cache": "the engine's own layer list (compat internals)",
    "tl_interp.models.saes.SAESpec.__init__": "a bundled SAE's record: its layer is where it was trained",
    "tl_interp.sites.SiteInfo.__init__": "the parsed form of a hook name (built by sites.parse, not by users)",
    "tl_interp.training.lens.LensSpec.__init__": "a bundled lens's training record",
}
COUNT_AND_LAYER_PARAMETERS = {"k", "top_k", "layer", "layers"}


def _dla_by_layer(model: Any, tokens: torch.Tensor) -> Any:
    return ti.lens.direct_logit_attribution(model, tokens, 3, by="layer", progress=False)


def _steering_report() -> Any:
    prov = ti.results.Provenance("m")
    return ti.steering.SteeringReport(
        torch.ones(2, 4, 1), ("vector", "scale", "task"), "accuracy", prov,
        labels={"vector": ("a", "b"), "scale": ("x1", "x2", "x4", "x8"), "task": ("t",)},
        meta={"vectors": [{}, {}], "scales": [1.0, 2.0, 4.0, 8.0]})


def _sae_at(sae: Any) -> Any:
    sae.cfg.metadata.hook_name = "blocks.0.hook_resid_pre"
    return sae


def test_every_public_callable_taking_k_or_layers_has_an_out_of_range_probe() -> None:
    missing = [label for label, fn, _ in _members()
               if COUNT_AND_LAYER_PARAMETERS & set(inspect.signature(fn).parameters)
               and label.removesuffix(".__init__") not in OUT_OF_RANGE and label not in NOT_A_SELECTION]
    assert not missing, "add an out-of-range probe to OUT_OF_RANGE for: " + ", ".join(missing)


@pytest.mark.parametrize("label, index", [(label, i) for label, probes in OUT_OF_RANGE.items()
                                          for i in range(len(probes))])
def test_an_out_of_range_selection_is_a_selection_error_everywhere(model: Any, tokens: torch.Tensor,
                                                                     results: dict[str, Any], label: str,
                                                                     index: int) -> None:
    with pytest.raises(Exception) as caught:
        OUT_OF_RANGE[label][index](model, tokens, results)
    assert type(caught.value) is SelectionError, (
        f"{label}: {type(caught.value).__module__}.{type(caught.value).__name__}: {caught.value}")


@pytest.mark.parametrize("k, error", [(0, SelectionError), (-3, SelectionError), (2.5, TypeCheckError),
                                      (True, TypeCheckError)])
def test_a_k_that_is_not_a_count_gets_one_class_whichever_top_method_reads_it(
        results: dict[str, Any], k: Any, error: type) -> None:
    calls = [lambda: results["patching"].top(k), lambda: results["ablation"].ranking(k),
             lambda: results["ablation"].top(k), lambda: results["dla"].top(k), lambda: results["congruence"].top(k),
             lambda: results["dla"].ranking(k), lambda: results["edges"].top(k),
             lambda: results["congruence"].top_k(k), lambda: results["patching"].top_cells(k)]
    for call in calls:
        with pytest.raises(error, match=r"\bk\b"):
            call()


# --- 2. messages name public entry points, never private modules --------------------------------
class _Wrong:
    """A value no annotation of the API accepts."""

    def __repr__(self) -> str:
        return "<wrong>"


def _rejects(hint: Any) -> bool:
    return hint is not Any and hint is not object and "Any" != getattr(hint, "_name", None)


def _wrong_typed_calls() -> Iterator[tuple[str, Callable[..., Any], dict[str, Any]]]:
    """(label, checked callable, keyword arguments with one wrong-typed value) for every
    ``@checked`` public function."""
    for label, fn, is_function in _members():
        if not is_function or not is_checked(fn):
            continue
        target = inspect.unwrap(fn)
        try:
            hints = typing.get_type_hints(target, include_extras=True)
        except Exception:
            hints = {}
        params = inspect.signature(fn).parameters
        checked_params = [p for p in params if p in hints and _rejects(hints[p])]
        if not checked_params:
            continue
        kwargs = {p.name: _Wrong() for p in params.values() if p.default is inspect.Parameter.empty
                  and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        kwargs[checked_params[0]] = _Wrong()
        yield label, fn, kwargs


def test_the_wrong_typed_walk_covers_the_api() -> None:
    assert len(list(_wrong_typed_calls())) > 100


@pytest.mark.parametrize("label", [label for label, _, _ in _wrong_typed_calls()])
def test_a_wrong_typed_argument_is_refused_naming_the_public_entry_point(label: str) -> None:
    fn, kwargs = next((fn, kwargs) for name, fn, kwargs in _wrong_typed_calls() if name == label)
    with pytest.raises(TlInterpError) as caught:
        fn(**kwargs)
    message = str(caught.value)
    assert not PRIVATE_PATH.search(message), f"{label}: the message names a private module: {message}"
    assert "tl_interp." not in message, f"{label}: the message names a module path: {message}"
    assert message.startswith("ti."), f"{label}: the message does not name its entry point: {message}"


def test_the_hooks_add_message_names_ti_hooks_add() -> None:
    with pytest.raises(TypeCheckError, match=r"^ti\.hooks\.add: vector is 'not a tensor'"):
        ti.hooks.add("blocks.0.hook_resid_pre", "not a tensor")


# --- 3. a wrong shape or dtype at any shape-typed entry point: the toolkit's classes -----------
def _package_functions() -> Iterator[tuple[str, Any]]:
    """Every module-level public function and public class of every tl_interp module (its
    methods too) whose signature declares a jaxtyping tensor shape."""
    for info in pkgutil.walk_packages(ti.__path__, "tl_interp."):
        if info.name.startswith(("tl_interp.distributed", "tl_interp.cli")):
            continue
        try:
            module = importlib.import_module(info.name)
        except ImportError:
            continue
        for name, obj in vars(module).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                continue
            candidates = [(name, obj)] if inspect.isfunction(obj) else []
            if inspect.isclass(obj):
                candidates = [(name, obj)] + [(f"{name}.{m}", f) for m, f in vars(obj).items()
                                              if inspect.isfunction(f) and (not m.startswith("_") or m == "forward")]
            for qual, fn in candidates:
                target = inspect.unwrap(fn.__init__ if inspect.isclass(fn) else fn)
                try:
                    hints = typing.get_type_hints(target, include_extras=True)
                except Exception:
                    continue
                if any("jaxtyping" in type(h).__module__ or "jaxtyping" in str(getattr(h, "__module__", ""))
                       for p, h in hints.items() if p != "return" and hasattr(h, "dims")):
                    yield f"{module.__name__}.{qual}", fn


# the hot path of every metric call (the engine's read tracer watches what they do to the logits);
# they check the logits' batch and positions by hand (ShapeError / SelectionError in metrics.py)
CHECKED_BY_HAND = {"tl_interp.metrics._metric.Metric.read", "tl_interp.metrics._metric.Metric.per_prompt"}


def test_every_function_that_declares_tensor_shapes_checks_them_with_the_house_decorator() -> None:
    unchecked = [label for label, fn in _package_functions() if not is_checked(fn) and label not in CHECKED_BY_HAND]
    assert len(list(_package_functions())) > 20
    assert not unchecked, ("shape-typed functions without @checked (a wrong shape would pass silently or raise "
                           "jaxtyping's own error): " + ", ".join(unchecked))


def _formerly_raw_jaxtyped() -> list[tuple[str, Callable[[], Any]]]:
    """A wrong-shaped call at each entry point that used a raw ``@jaxtyped(typechecker=beartype)``."""
    from tl_interp.ablation import saes as ablation_saes
    from tl_interp.models import Tokenized
    from tl_interp.models.zoo import induction, ordinal, s5_mlp
    from tl_interp.training import induction as train_induction

    long, module = torch.long, torch.nn.Module()
    s5 = s5_mlp.S5MLP(s5_mlp.S5MLPConfig(d_embed=4, d_hidden=4))
    return [
        ("Tokenized", lambda: Tokenized(torch.zeros(2, 3, dtype=long), torch.ones(2, 4, dtype=long),
                                        torch.zeros(2, dtype=long), [])),
        ("site_activations", lambda: ablation_saes.site_activations(None, 0, torch.zeros(2, 3, dtype=long),
                                                                    torch.ones(2, 4, dtype=long))),
        ("reconstruction_stats", lambda: ablation_saes.reconstruction_stats(None, torch.zeros(3))),
        ("splice_losses", lambda: ablation_saes.splice_losses(None, None, torch.zeros(2, 3, dtype=long),
                                                              torch.ones(3, 3, dtype=long))),
        ("S5MLP.forward", lambda: s5(torch.zeros(4, 3, dtype=long))),
        ("accuracy_and_loss", lambda: s5_mlp.accuracy_and_loss(s5, torch.zeros(4, 2, dtype=long),
                                                               torch.zeros(5, dtype=long))),
        ("head_scores", lambda: induction.head_scores(module, torch.zeros(2, 3, 4, dtype=long))),
        ("half_losses", lambda: induction.half_losses(module, torch.zeros(9, dtype=long))),
        ("answer_logits", lambda: ordinal.answer_logits(module, torch.zeros(2, 5, dtype=long),
                                                        torch.zeros(3, dtype=long))),
        ("training_loss", lambda: train_induction.training_loss(gpt2_style(), torch.zeros(2, 3, 4, dtype=long),
                                                                generator=torch.Generator())),
    ]


@pytest.mark.parametrize("index", range(10))
def test_a_wrong_shape_at_a_formerly_raw_jaxtyped_entry_point_is_the_toolkits_error(index: int) -> None:
    name, call = _formerly_raw_jaxtyped()[index]
    with pytest.raises(TlInterpError) as caught:
        call()
    assert isinstance(caught.value, (ShapeError, TypeCheckError)), f"{name}: {type(caught.value)}"
    assert not PRIVATE_PATH.search(str(caught.value)), f"{name}: {caught.value}"


# --- 4. the other mistakes of errors.py's table: one class each, wherever they are made ---------
def _other_mistakes() -> list[tuple[str, Callable[[], Any], type]]:
    from tests.conftest import attn_only
    from tl_interp.intervention import Intervention

    model = gpt2_style()
    tokens = torch.randint(1, D_VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
    return [
        # too few prompts / rows for a statistic: InputError (was a ShapeError in two of them)
        ("bootstrap of one prompt", lambda: ti.stats.bootstrap_mean_ci(torch.ones(3, 1)), ti.InputError),
        ("bootstrap_ci of one row", lambda: ti.stats.bootstrap_ci(lambda x: x.mean(), torch.ones(1)), ti.InputError),
        ("edge stability from one prompt", lambda: ti.circuits.stability(_one_prompt_scores(model, tokens), k=2),
         ti.InputError),
        # a hook name that was never cached / collected: HookNameError (was a bare KeyError)
        ("a name the cache never held", lambda: _cached(model, tokens)["blocks.1.hook_resid_pre"], ti.HookNameError),
        ("a name collect never read", lambda: ti.collect(model, tokens, "blocks.0.hook_resid_pre", progress=False)
         ["blocks.1.hook_resid_pre"], ti.HookNameError),
        # a request this model cannot honour: UnsupportedError (was an OptionError for DLA)
        ("DLA by neuron, attention-only", lambda: ti.lens.direct_logit_attribution(
            attn_only(), tokens, 3, by="neuron", progress=False), ti.errors.UnsupportedError),
        # a call of the wrong form: TypeCheckError (was a bare TypeError)
        ("Intervention.single with fn and build", lambda: Intervention.single(
            "blocks.0.hook_resid_pre", fn=lambda a, hook: a, build=lambda m: None), ti.errors.TypeCheckError),
    ]


def _one_prompt_scores(model: Any, tokens: torch.Tensor) -> Any:
    metric = ti.metrics.answer_logprob(torch.full((1,), 3))
    return ti.circuits.attribute(model, tokens[:1], tokens[1:], metric, method="eap", progress=False)


def _cached(model: Any, tokens: torch.Tensor) -> Any:
    cache = ti.hooks.cache("blocks.0.hook_resid_pre")
    cache.run(model, tokens)
    return cache


@pytest.mark.parametrize("index", range(7))
def test_each_other_mistake_raises_its_one_class(index: int) -> None:
    name, call, error = _other_mistakes()[index]
    with pytest.raises(Exception) as caught:
        call()
    assert type(caught.value) is error, f"{name}: {type(caught.value).__name__}: {caught.value}"
