"""Seed 001's pieces on S5: neuron clusters by subspace, the trace-logit fraction of the logits, and the
optimal weighting of representations. Checked against numpy and against known facts of S5 (the
seed's own numbers for the trace logits of the sign, standard and standard x sign representations)."""

import itertools

import numpy as np
import pytest
import torch

import tl_interp as ti
from tl_interp.errors import InputError, OptionError, ShapeError
from tl_interp.models.zoo import all_pairs, groups

IRREPS = ("sign", "standard", "standard_sign")


@pytest.fixture(scope="module")
def traces() -> dict[str, torch.Tensor]:
    """Trace logits chi(x y z^-1) over all 14400 (x, y) and 120 z, by numpy indexing."""
    table, inverse = groups.multiplication_table().numpy(), groups.inverses().numpy()
    xy = table.reshape(-1)
    return {n: torch.tensor(groups.character(n, dtype=torch.float64).numpy()[table[xy[:, None], inverse[None, :]]])
            for n in IRREPS}


def test_trace_logits_alone_and_best_weighted_reach_the_known_s5_losses(traces) -> None:
    labels = all_pairs()[1]
    res = ti.geometry.optimal_weights(traces, labels)
    # the seed's values for S5 (and chi(e) = dim is the largest trace, so the injective reps are exact)
    assert res.single_loss.tolist() == pytest.approx([4.2213, 1.4973, 1.3868], abs=1e-4)
    assert res.single_accuracy.tolist() == pytest.approx([1 / 60, 1.0, 1.0])
    assert res.weights.tolist() == pytest.approx([0.0, 0.5, 0.5], abs=1e-4)
    assert res.loss == pytest.approx(1.2616, abs=1e-4) and res.accuracy == 1.0


def test_optimal_weights_is_no_worse_than_a_numpy_grid_search_on_the_simplex() -> None:
    g = np.random.default_rng(0)
    forms = {f"f{i}": torch.tensor(g.normal(size=(200, 7))) for i in range(3)}
    labels = torch.tensor(g.integers(0, 7, 200))
    res = ti.geometry.optimal_weights(forms, labels)
    T = np.stack([f.numpy() - f.numpy().mean(1, keepdims=True) for f in forms.values()])

    def ce(w):
        z = np.tensordot(w, T, 1)
        z = z - z.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(200), labels.numpy()]))

    grid = [np.array([i, j, 40 - i - j]) / 40 for i, j in itertools.product(range(41), range(41)) if i + j <= 40]
    best = min(grid, key=ce)
    assert res.loss == pytest.approx(ce(res.weights.numpy()), abs=1e-12)
    assert res.loss <= ce(best) + 1e-12
    assert np.abs(res.weights.numpy() - best).max() <= 0.05  # the grid's optimum is within one step
    assert res.weights.sum().item() == pytest.approx(1.0) and (res.weights >= 0).all()


def test_logit_fraction_equals_numpy_and_orthogonal_forms_add_up(traces) -> None:
    g = np.random.default_rng(1)
    logits = torch.tensor(g.normal(size=(14400, 120))) + 2 * traces["standard"] - traces["sign"]
    res = ti.geometry.logit_fraction(logits, traces)
    L = logits.numpy() - logits.numpy().mean(1, keepdims=True)
    fitted = 0.0
    for i, n in enumerate(IRREPS):
        T = traces[n].numpy() - traces[n].numpy().mean(1, keepdims=True)
        dots, tn, ln = (L * T).sum(1), (T * T).sum(1), (L * L).sum(1)
        assert float(res.fraction[i]) == pytest.approx((dots ** 2 / tn).sum() / ln.sum(), rel=1e-10)
        assert float(res.mean_fraction[i]) == pytest.approx(np.mean(dots ** 2 / (tn * ln)), rel=1e-10)
        assert float(res.mean_cosine[i]) == pytest.approx(np.mean(dots / np.sqrt(tn * ln)), rel=1e-10)
        assert float(res.weights[i]) == pytest.approx(dots.sum() / tn.sum(), rel=1e-8)  # orthogonal forms
        fitted += dots.sum() ** 2 / tn.sum() / (L * L).sum()
    assert res.weights.tolist() == pytest.approx([-1.0, 2.0, 0.0], abs=0.02)
    # characters of distinct irreps are orthogonal input by input, so the global fit's share is the sum of
    # each form's; one weight for all inputs explains no more than a scale per input does
    assert res.fitted_fraction == pytest.approx(fitted, rel=1e-8)
    assert res.fitted_fraction <= float(res.fraction.sum()) + 1e-12


def test_a_constant_form_is_refused_with_the_reason() -> None:
    with pytest.raises(InputError, match=r"forms\['trivial'\] is constant over the classes.*Leave it out"):
        ti.geometry.logit_fraction(torch.randn(4, 3), {"trivial": torch.ones(4, 3)})
    with pytest.raises(ShapeError, match=r"labels must be 4 class indices"):
        ti.geometry.optimal_weights({"f": torch.randn(4, 3)}, torch.tensor([0, 1, 2]))


def _components() -> dict[str, torch.Tensor]:
    table, inverse = groups.multiplication_table(), groups.inverses()
    out = {}
    for n in ("trivial",) + IRREPS:
        chi = groups.character(n, dtype=torch.float64)
        out[n] = ti.hooks.orthonormal_basis(float(chi[0]) / 120 * chi[table[:, inverse]])
    return out


def test_neurons_reading_one_representation_cluster_there_and_shares_equal_numpy() -> None:
    bases = _components()
    g = torch.Generator().manual_seed(0)
    planted = {n: torch.randn(5, b.shape[0], generator=g, dtype=torch.float64) @ b for n, b in bases.items()}
    unit = {n: p / p.norm(dim=1, keepdim=True) for n, p in planted.items()}
    mixed = unit["standard"][:2] + unit["standard_sign"][:2]  # half its norm in each: below min_share
    W = torch.cat(list(planted.values()) + [mixed])
    res = ti.geometry.cluster_by_subspace(W, bases, min_share=0.6)
    assert res.assignment.tolist() == [0] * 5 + [1] * 5 + [2] * 5 + [3] * 5 + [-1, -1]
    assert res.counts() == {"trivial": 5, "sign": 5, "standard": 5, "standard_sign": 5, "mixed": 2}
    w = W.numpy()
    for j, b in enumerate(bases.values()):
        q, _ = np.linalg.qr(b.numpy().T)  # an independent orthonormal basis of the same span
        expected = (np.linalg.norm(w @ q, axis=1) / np.linalg.norm(w, axis=1)) ** 2
        np.testing.assert_allclose(res.shares[:, j].numpy(), expected, atol=1e-12)
    np.testing.assert_allclose(res.rest.numpy(), 0.0, atol=1e-12)  # W lies inside the four components


def test_clustering_refuses_overlapping_subspaces_zero_units_and_bad_thresholds() -> None:
    W = torch.randn(3, 4, dtype=torch.float64)
    with pytest.raises(OptionError, match=r"'a' and 'b' overlap.*Orthogonalise"):
        ti.geometry.cluster_by_subspace(W, {"a": torch.eye(4)[:2], "b": torch.eye(4)[1:3]})
    with pytest.raises(InputError, match=r"units \[1\] have all-zero weights"):
        ti.geometry.cluster_by_subspace(torch.stack([W[0], torch.zeros(4, dtype=torch.float64)]), {"a": torch.eye(4)})
    with pytest.raises(OptionError, match=r"min_share=0 must be"):
        ti.geometry.cluster_by_subspace(W, {"a": torch.eye(4)}, min_share=0)


def test_the_s5_demo_reports_clusters_and_trace_logits(tmp_path) -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "demos" / "s5_representations.py"
    spec = importlib.util.spec_from_file_location("s5_demo_forms", path)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    found = demo.main(tmp_path)
    nc, tr = found["neuron_clusters"], found["trace_logits"]
    assert sum(nc["counts"].values()) == 128 and nc["counts"]["standard"] > 10
    assert nc["counts"]["mixed"] < 16  # the neurons read one representation each (Chughtai et al.)
    assert max(tr["fraction"], key=tr["fraction"].get) == "standard"  # the carrier found by ablation
    assert 0 < tr["fitted_fraction"] <= sum(tr["fraction"].values()) + 1e-9 <= 1 + 1e-9
    assert tr["optimal_loss"] <= min(tr["single_loss"].values()) + 1e-9
    assert tr["single_loss"]["standard"] == pytest.approx(1.4973, abs=1e-4)
    text = (tmp_path / "summary.md").read_text()
    assert "## Hidden neurons clustered" in text and "## Trace logits" in text
