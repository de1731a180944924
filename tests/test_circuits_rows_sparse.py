"""The sparse senders' sum of ``_rows.CircuitRows`` (each mixed receiver sums only the senders it
needs, ``torch.sparse.mm``) against the brute-force hook loop (one forward per circuit, every edge
outside it patched by hand), alone and mixed with the dense product in one pass."""

import copy

import pytest
import torch

import tl_interp as ti
from tests.circuits_reference import brute_force_faithfulness
from tests.conftest import _cfg, _hooked, llama_style
from tests.test_circuits_faithfulness_paths import _nested
from tests.test_circuits_verify import _task
from tl_interp import circuits
from tl_interp.circuits import _rows, _sums


def _llama_4l():
    """GQA, rotary, RMSNorm, 4 layers: later layers have many senders."""
    return _hooked()(_cfg(n_layers=4, act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
                          rotary_dim=8, gated_mlp=True, final_rms=True, n_key_value_heads=2)).eval()


def _reference(model, clean, corrupted, chosen, score, ablation):
    """The brute-force loop on a float64 copy of the model: with zero ablation in a bias-free model some
    inputs are ~0 in exact arithmetic, where the float32 loop's cancellation (1e-5 after the final
    norm) is what it would measure."""
    twin = copy.deepcopy(model).to(torch.float64)
    return brute_force_faithfulness(twin, clean, corrupted, chosen, lambda logits: score(logits).double(),
                                    ablation=ablation)


def _spy(monkeypatch, sparse_where=None) -> dict[str, list]:
    """Record which products run: sparse sums (with their window) and dense tables; ``sparse_where``
    (a key -> bool) overrides the density rule, which otherwise always picks sparse."""
    monkeypatch.setattr(_sums, "SPARSE_MIN_WORK", 0)
    monkeypatch.setattr(_sums, "DENSE_SPEEDUP", 0)  # every product with work is sparse
    ran: dict[str, list] = {"sparse": [], "dense": [], "edited": []}
    sparse, sparse_sum, table = _rows.CircuitRows._sparse, _rows.CircuitRows._sparse_sum, _rows.CircuitRows._table

    def choose(self, key, *args):
        parts = sparse(self, key, *args) if sparse_where is None or sparse_where(key) else None
        if parts is not None and isinstance(key, tuple) and any(bool((signs > 0).any()) for *_, signs in parts):
            ran["edited"].append(key)  # heads whose fewer excluded senders are summed on the current input
        return parts

    def summed(self, group, m, lo, n_pos):
        ran["sparse"].append((group, lo, n_pos, self._state["diff"].shape[3]))
        return sparse_sum(self, group, m, lo, n_pos)

    def dense(self, group, lo, n_pos):
        ran["dense"].append(group)
        return table(self, group, lo, n_pos)

    monkeypatch.setattr(_rows.CircuitRows, "_sparse", choose)
    monkeypatch.setattr(_rows.CircuitRows, "_sparse_sum", summed)
    monkeypatch.setattr(_rows.CircuitRows, "_table", dense)
    return ran


@pytest.mark.parametrize("ablation", ["corrupted", "zero"])
@pytest.mark.parametrize("layers", [2, 4])
def test_the_sparse_sum_on_a_gqa_rotary_model_equals_the_brute_force_loop(monkeypatch, ablation, layers) -> None:
    model = llama_style() if layers == 2 else _llama_4l()
    clean, corrupted, metric, score = _task(model, seed=5)
    chosen = _nested(circuits.graph(model), seed=5)
    ran = _spy(monkeypatch)
    result = circuits.faithfulness(model, clean, corrupted, chosen, metric, ablation=ablation, progress=False)
    assert result.provenance.settings["circuit_rows"] == "on"
    assert ran["sparse"] and not ran["dense"]
    heads, mlps = [g for g, *_ in ran["sparse"] if g.endswith("attn")], [g for g, *_ in ran["sparse"] if "mlp" in g]
    assert heads and mlps
    # the final block at the last position alone: its queries and MLP summed over that window
    assert any(lo > 0 and lo + n == pos for _, lo, n, pos in ran["sparse"])
    assert bool(ran["edited"]) == (layers == 4)  # the final block's heads are always rebuilt from the constant
    reference = _reference(model, clean, corrupted, chosen, score, ablation)
    torch.testing.assert_close(result.values.double(), reference.double(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ablation", ["corrupted", "zero"])
def test_sparse_and_dense_products_in_one_pass_equal_the_brute_force_loop(monkeypatch, ablation) -> None:
    # odd layers' heads and the even layers' MLPs sparse, the rest dense, in the same pass
    model = _llama_4l()
    clean, corrupted, metric, score = _task(model, seed=6)
    g = circuits.graph(model)
    chosen = [*_nested(g, seed=6), *_nested(g, seed=7)[2:-1]]

    def layer(key) -> int:
        name = key[0] if isinstance(key, tuple) else key
        return int(name.split(".")[1]) if name.startswith("blocks") else g.n_layers

    ran = _spy(monkeypatch, lambda key: (layer(key) % 2 == 1) == isinstance(key, tuple))
    result = circuits.faithfulness(model, clean, corrupted, chosen, metric, ablation=ablation, progress=False)
    assert result.provenance.settings["passes"] == 1
    assert {layer((group,)) % 2 for group, *_ in ran["sparse"] if group.endswith("attn")} == {1}
    assert {layer((group,)) % 2 for group in ran["dense"] if group.endswith("attn")} == {0}
    assert any("mlp" in group for group, *_ in ran["sparse"]) and any("mlp" in group for group in ran["dense"])
    assert ran["edited"]
    reference = _reference(model, clean, corrupted, chosen, score, ablation)
    torch.testing.assert_close(result.values.double(), reference.double(), atol=1e-5, rtol=0)


def test_the_sparse_sum_with_mean_ablation_equals_the_per_head_cells(monkeypatch) -> None:
    model = _llama_4l()
    clean, corrupted, metric, _ = _task(model, seed=8)
    chosen = _nested(circuits.graph(model), seed=8)[1:-1]
    ran = _spy(monkeypatch)
    result = circuits.faithfulness(model, clean, corrupted, chosen, metric, ablation="mean", progress=False)
    assert ran["sparse"] and not ran["dense"] and ran["edited"]
    monkeypatch.setattr(ti.circuits._faithfulness, "rows_reason", lambda *args: "forced off")
    heads = circuits.faithfulness(model, clean, corrupted, chosen, metric, ablation="mean", progress=False)
    assert heads.provenance.settings["circuit_rows"] == "off: forced off"
    torch.testing.assert_close(result.values, heads.values, atol=1e-5, rtol=0)


def test_small_products_stay_dense() -> None:
    # below _sums.SPARSE_MIN_WORK multiply-adds a product is dense whatever its density (the zoo's models)
    model = llama_style()
    clean, corrupted, metric, _ = _task(model)
    calls = []
    sparse_sum = _rows.CircuitRows._sparse_sum
    try:
        _rows.CircuitRows._sparse_sum = lambda self, *args: calls.append(args) or sparse_sum(self, *args)
        circuits.faithfulness(model, clean, corrupted, _nested(circuits.graph(model)), metric, progress=False)
    finally:
        _rows.CircuitRows._sparse_sum = sparse_sum
    assert calls == []
