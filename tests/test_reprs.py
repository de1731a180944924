"""Every Result prints short: ``repr`` is one bounded line, ``summary()`` a few readable lines.

The Result types are found by walking the package, so a new one cannot escape: it fails here
until it has an example below. Each example is built by its study on a tiny model (or, where
a study needs a large model, by hand with the extras the study writes), some made large on
purpose: a 1536-vector cosine matrix printed all its labels twice before.
"""

import importlib
import pkgutil
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
import torch

import tl_interp as ti
from tl_interp.results import REPR_MAX_CHARS, Provenance, Result, bounded, short

MAX_LINES = 15
G = torch.Generator().manual_seed(0)


def _result_types() -> set[type[Result]]:
    for info in pkgutil.walk_packages(ti.__path__, "tl_interp."):
        try:
            importlib.import_module(info.name)
        except ImportError as err:  # an optional extra (ray) that is not installed
            if "tl_interp" in str(err):
                raise
    found, todo = set(), [Result]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub.__module__.startswith("tl_interp.") and sub not in found:
                found.add(sub)
                todo.append(sub)
    return found | {Result}


def _tiny_model() -> Any:
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    cfg = HookedTransformerConfig(n_layers=2, d_model=16, n_heads=2, d_head=8, n_ctx=8, d_vocab=10, act_fn="relu",
                                  d_mlp=32, seed=0)
    return HookedTransformer(cfg)


CLEAN, CORRUPT = torch.tensor([[1, 2, 3, 4], [1, 2, 6, 4]]), torch.tensor([[1, 2, 5, 4], [1, 2, 7, 4]])


def _result() -> Result:
    tokens = tuple(f"token {i}\nwith a newline and a long tail" for i in range(300))
    return Result(torch.randn(30, 300, generator=G), ("layer", "pos"), "logit diff", Provenance.make("m", seed=0),
                  labels={"pos": tokens})


def _patching() -> Any:
    return ti.patching.sweep(_tiny_model(), CLEAN, CORRUPT, ti.metrics.logit_diff(3, 5), progress=False)


def _ablation() -> Any:
    tokens = torch.randint(0, 10, (4, 5), generator=G)
    return ti.ablation.scan(_tiny_model(), tokens, ti.metrics.loss(tokens), progress=False)


def _angles() -> Any:
    states = torch.randn(31, 6, 5, 8, generator=G)
    return ti.geometry.layer_angles(states, positions=torch.tensor([2, 3, 1, 4, 2, 3]))


def _subspace() -> Any:
    from tl_interp.models.zoo import S5MLP, all_pairs

    model, (pairs, labels) = S5MLP(), all_pairs()
    loss = lambda logits: torch.nn.functional.cross_entropy(logits, labels[:64])  # noqa: E731
    spaces = {f"subspace number {i} with a long name": torch.eye(128)[i:i + 4] for i in range(5)}
    return ti.geometry.subspace_ablation(model, pairs[:64], "hook_hidden", spaces, metric=loss, n_random=2,
                                         progress=False)


def _paired(layers: bool) -> Callable[[], Any]:
    def build() -> Any:
        a = torch.randn(*((12,) if layers else ()), 20, 8, generator=G)
        return ti.geometry.paired(a, a + 0.1 * torch.randn(a.shape, generator=G), score=torch.randn(20, generator=G),
                                  n_permutations=50, n_boot=50, progress=False)
    return build


def _feature_spaces() -> Any:
    codes = torch.relu(torch.randn(120, 12, generator=G))
    dec = torch.randn(12, 6, generator=G)
    return ti.similarity.feature_spaces(codes, codes.flip(1), dec, dec.flip(0), n_permutations=20, n_boot=4)


def _similarity() -> Any:
    x = torch.randn(40, 6, generator=G)
    return ti.similarity.compare(x, x @ torch.randn(6, 5, generator=G), n_permutations=20, n_boot=20)


def _cosine() -> Any:
    labels = [f"L{i // 256}N{i % 256}" for i in range(1536)]
    return ti.weights.cosine_matrix(torch.randn(1536, 16, generator=G), labels=labels)


def _congruence() -> Any:
    return ti.weights.congruence(_tiny_model(), 0)


def _lens() -> Any:
    return ti.lens.logit_lens(ti.models.load("ordinal-4l"), ["after june comes", "one, two,"], positions="all",
                              answers=[" july", " three"], progress=False)


def _dla() -> Any:
    tokens = torch.arange(2, 12)[None].repeat(1, 2)
    return ti.lens.direct_logit_attribution(ti.models.load("induction-2l"), tokens, 7, by="head", positions=14,
                                            progress=False)


def _steering() -> Any:
    from tl_interp.models.zoo.ordinal_data import analogy_tasks, paired_lists

    model = ti.models.load("ordinal-4l")
    pos, neg = paired_lists("train")
    vector = ti.steering.contrast_vector(model, pos, neg, ti.site("resid_pre", 2)).renamed("months - numbers")
    tasks = analogy_tasks("heldout")
    return ti.steering.evaluate(model, {"months": tasks["months"], "numbers": tasks["numbers"]}, vector, [2.0, 8.0],
                                controls=ti.steering.Controls(random_seeds=(0,), unrelated_prompts=()), n_boot=50,
                                progress=False)


def _edge_scores() -> Any:
    return ti.circuits.attribute(_tiny_model(), CLEAN, CORRUPT, ti.metrics.logit_diff(3, 5), method="eap",
                                 progress=False)


def _faithfulness() -> Any:
    model = _tiny_model()
    every = ti.circuits.graph(model).edges
    circuits = [every[:k] for k in range(0, len(every), max(len(every) // 9, 1))]
    return ti.circuits.faithfulness(model, CLEAN, CORRUPT, circuits, ti.metrics.logit_diff(3, 5), progress=False)


def _curve() -> Any:
    model = _tiny_model()
    return ti.circuits.faithfulness_curve(model, CLEAN, CORRUPT, _edge_scores(), ti.metrics.logit_diff(3, 5),
                                          budgets=[0.1, 0.5, 1.0], n_boot=50, progress=False)


def _stability() -> Any:
    return ti.circuits.stability(_edge_scores(), k=[3, 10], n_boot=50)


EXAMPLES: dict[str, list[Callable[[], Any]]] = {
    "Result": [_result], "PatchingResult": [_patching], "AblationResult": [_ablation], "LayerAngles": [_angles],
    "SubspaceAblation": [_subspace], "PairedGeometry": [_paired(False), _paired(True)],
    "SimilarityResult": [_similarity], "FeatureSpaces": [_feature_spaces], "CosineMatrix": [_cosine], "Congruence": [_congruence],
    "LensResult": [_lens], "DLAResult": [_dla], "SteeringReport": [_steering], "EdgeScores": [_edge_scores],
    "Faithfulness": [_faithfulness], "FaithfulnessCurve": [_curve], "EdgeStability": [_stability],
}


def test_every_result_type_in_the_package_has_an_example_here() -> None:
    names = {t.__name__ for t in _result_types()}
    missing = sorted(names - set(EXAMPLES))
    assert not missing, f"new Result types {missing}: add an example to EXAMPLES so their repr is checked"


@pytest.mark.parametrize("build", [b for builds in EXAMPLES.values() for b in builds],
                         ids=[f"{name}-{i}" for name, builds in EXAMPLES.items() for i in range(len(builds))])
def test_repr_is_one_short_line_with_shape_headline_and_provenance(build: Callable[[], Any]) -> None:
    result = build()
    text = repr(result)
    assert len(text) <= REPR_MAX_CHARS and len(text.splitlines()) <= MAX_LINES, text
    assert text.startswith(type(result).__name__ + "(") and "\n" not in text
    assert f"model={short(result.provenance.model_id, 60)}" in text  # provenance, in the same line
    assert str(result) == text
    summary = result.summary()
    lines = summary.splitlines()
    assert 2 <= len(lines) <= 45 and max(len(line) for line in lines) <= 400, summary
    assert "object at 0x" not in text + summary and "tensor(" not in text + summary


def test_a_1536_vector_cosine_matrix_prints_its_headline_not_its_labels() -> None:
    cm = _cosine()
    text = repr(cm)
    assert len(text) < 400 and text.count("L5N") <= 2
    assert "1536 vectors, clustered (average linkage)" in text
    off = cm.values.double() - torch.eye(1536, dtype=torch.float64)
    best = float(off.abs().max())
    assert f"{best:.3f}" in text  # the most aligned pair, computed independently
    mean = float(off.abs().sum() / (1536 * 1535))
    assert f"{mean:.3f}" in text


def test_patching_repr_names_the_base_and_source_runs_and_the_most_recovered_cell() -> None:
    res = _patching()
    text = repr(res)
    assert f"base {float(res.base):.4g}, source {float(res.source):.4g}" in text
    flat = res.normalized.flatten()
    first = text.split("top: ")[1].split("] ")[1].split(",")[0]
    assert first == f"{float(flat[flat.abs().argmax()]):.4g}" and "(fraction recovered)" in text
    assert "recovered" in res.summary() and "base run" in res.summary()


def test_a_dataclass_subclass_that_forgets_repr_false_still_prints_short() -> None:
    from dataclasses import dataclass

    from tl_interp.results import register_result

    @register_result
    @dataclass(frozen=True, eq=False)
    class Forgetful(Result):
        kind = "test_forgetful"

    r = Forgetful(torch.zeros(2000), ("unit",), "m", Provenance("x"), labels={"unit": tuple(map(str, range(2000)))})
    assert len(repr(r)) < 200 and repr(r).startswith("Forgetful(m; unit=2000;")


def test_long_labels_are_shortened_and_newlines_escaped() -> None:
    assert short("x" * 100) == "x" * 23 + "…" and short("a\nb") == "a\\nb"
    assert len(bounded("y" * 5000)) == REPR_MAX_CHARS


def test_a_result_missing_an_extra_its_headline_reads_still_prints() -> None:
    from tl_interp.patching import PatchingResult

    bare = PatchingResult(torch.tensor([[1.0, -4.0]]), ("layer", "pos"), "m", Provenance("x"))  # no base/source
    assert repr(bare) == "PatchingResult(m; layer=1, pos=2; top: [0, 1] -4, [0, 0] 1; model=x)"
