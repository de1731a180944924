"""ti.weights: congruence is the folded matrix product, clustering finds planted groups, helpers match scipy."""

import copy

import numpy as np
import pytest
import scipy.stats
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import ToyMLP, attn_only, gpt2_style, llama_style
from tl_interp import weights
from tl_interp.errors import InputError, OptionError, SelectionError, UnsupportedError

weights = ti.weights


def with_random_gains(model):
    """Norm gains far from 1, so folding them (or not) changes every product."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_final.w", "ln2.w", "ln1.w")):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            if name.endswith(("ln_final.b", "ln2.b")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return model


@pytest.fixture(params=["LN", "RMS"])
def unprocessed(request):
    return with_random_gains(gpt2_style() if request.param == "LN" else llama_style())


def processed(model, *, center_unembed=False):
    folded = copy.deepcopy(model)
    folded.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=center_unembed)
    return folded


def test_congruence_is_the_product_of_folded_weights_by_hand(unprocessed) -> None:
    model, layer = unprocessed, 1
    ln = model.cfg.normalization_type == "LN"
    centre = (lambda w, dim=-1: w - w.mean(dim, keepdim=True)) if ln else (lambda w, dim=-1: w)
    w_out = centre(model.blocks[layer].mlp.W_out.detach().double())
    w_u = centre(model.ln_final.w.detach().double()[:, None] * model.W_U.detach().double(), 0)
    w_u = w_u - w_u.mean(-1, keepdim=True)  # center_unembed, for every norm
    out = weights.congruence(model, layer)
    assert_close(out.values, w_out @ w_u)
    w_e = centre(model.W_E.detach().double())
    w_in = centre(model.blocks[layer].ln2.w.detach().double()[:, None] * model.blocks[layer].mlp.W_in.detach().double(), 0)
    assert_close(weights.congruence(model, layer, kind="in").values, (w_e @ w_in).T)
    assert out.provenance.settings["weights_processed"] is False
    assert out.provenance.settings["folded_by_tl_interp"] is True


def test_congruence_is_the_same_whether_transformer_lens_folded_the_weights_or_not(unprocessed) -> None:
    folded = processed(unprocessed)
    for kind in ("out", "in"):
        mine = weights.congruence(unprocessed, 0, kind=kind)
        theirs = weights.congruence(folded, 0, kind=kind)
        assert_close(mine.values, theirs.values, atol=1e-5, rtol=1e-5)
        assert theirs.provenance.settings["weights_processed"] is True
    # read as TransformerLens's center_unembed leaves W_U, whether or not it was applied
    centred = processed(unprocessed, center_unembed=True)
    direct = centred.blocks[0].mlp.W_out.detach().double() @ centred.W_U.detach().double()
    assert_close(weights.congruence(centred, 0).values, direct)
    assert_close(weights.congruence(folded, 0).values, direct, atol=1e-5, rtol=1e-5)


def test_gated_mlps_have_a_gate_congruence_and_others_refuse_it() -> None:
    model = with_random_gains(llama_style())
    gate = model.blocks[0].ln2.w.detach().double()[:, None] * model.blocks[0].mlp.W_gate.detach().double()
    assert_close(weights.congruence(model, 0, kind="gate").values, (model.W_E.detach().double() @ gate).T)
    with pytest.raises(UnsupportedError, match="no gated MLP; use kind='in'"):
        weights.congruence(gpt2_style(), 0, kind="gate")


def test_congruence_tables_label_neurons_and_tokens() -> None:
    model = gpt2_style()
    c = weights.congruence(model, 1, token_ids=[3, 5, 7, 9])
    assert c.values.shape == (64, 4) and c.labels["d_mlp"][2] == "L1N2"
    table = c.top_k(2, neurons=["L1N0", 5])
    expected = torch.topk(c.values[[0, 5]], 2, dim=1)
    assert torch.equal(table.indices, expected.indices)
    assert table.labels[0] == tuple(c.labels["d_vocab"][i] for i in expected.indices[0].tolist())
    assert table.rows == ("L1N0", "L1N5") and "L1N5" in table.markdown()
    assert_close(c.kurtosis(), torch.as_tensor(scipy.stats.kurtosis(c.values.numpy(), axis=1)))


def test_planted_clusters_are_recovered_in_order() -> None:
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(3, 32, generator=g)
    members = torch.cat([c + 0.15 * torch.randn(8, 32, generator=g) for c in centres])
    truth = torch.arange(3).repeat_interleave(8)
    shuffle = torch.randperm(24, generator=g)
    cm = weights.cosine_matrix(members[shuffle], labels=[f"c{int(t)}" for t in truth[shuffle]])
    ordered = [label for label in cm.ordered_labels]
    runs = [ordered[0]] + [b for a, b in zip(ordered, ordered[1:]) if a != b]
    assert sorted(runs) == ["c0", "c1", "c2"]  # each planted cluster is one contiguous block
    found = cm.clusters(3)
    for cluster in range(3):
        assert len(set(found[truth[shuffle] == cluster].tolist())) == 1
    unit = members[shuffle].double() / members[shuffle].double().norm(dim=1, keepdim=True)
    assert_close(cm.matrix, unit @ unit.T)
    around = weights.cluster_around(cm_vectors := weights.as_vectors(members), 0, threshold=0.5)
    assert set(around.indices.tolist()) == set(range(8)) and around.exemplar == "0"
    assert cm_vectors.matrix.dtype == torch.float64
    named = weights.cosine_matrix(members[shuffle], labels=[f"v{i}" for i in range(24)])
    fig = named.figure()
    assert list(fig.data[0].y) == list(named.ordered_labels) == list(fig.data[0].x)
    assert_close(torch.tensor(fig.data[0].z, dtype=torch.float64), named.ordered)


def test_vectors_read_from_a_model_carry_labels_and_provenance() -> None:
    model = gpt2_style()
    out = weights.mlp_out(model, 1)
    assert out.labels[:2] == ("L1N0", "L1N1") and out.matrix.shape == (64, 32)
    assert out.settings["weights_processed"] is False
    unembed = weights.unembedding(model)
    reference = copy.deepcopy(model)
    reference.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    folded_unembed = reference.W_U.detach().double()
    assert_close(weights.norms(unembed).values, folded_unembed.norm(dim=0))
    assert weights.norms(unembed).labels["vector"] == unembed.labels
    assert len(weights.mlp_in(model, 0)) == 64 and len(weights.embedding(model)) == model.cfg.d_vocab


def test_orthogonalize_removes_exactly_the_shared_part() -> None:
    g = torch.Generator().manual_seed(1)
    v, a = torch.randn(16, generator=g), torch.randn(3, 16, generator=g)
    rest = weights.orthogonalize(v, a)
    assert_close(a.double() @ rest, torch.zeros(3, dtype=torch.float64), atol=1e-10, rtol=0)
    q, _ = torch.linalg.qr(a.double().T)
    assert_close(rest, v.double() - q @ (q.T @ v.double()))
    ortho = weights.orthogonalize(torch.tensor([0.0, 2.0, 0.0]), torch.tensor([1.0, 0.0, 0.0]))
    assert ortho.tolist() == [0.0, 2.0, 0.0]


@pytest.mark.parametrize("fisher", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_kurtosis_matches_scipy(fisher, bias) -> None:
    x = torch.randn(5, 40, generator=torch.Generator().manual_seed(2)) ** 3
    want = scipy.stats.kurtosis(x.double().numpy(), axis=1, fisher=fisher, bias=bias)
    assert_close(weights.kurtosis(x, fisher=fisher, bias=bias), torch.as_tensor(want))
    assert_close(weights.kurtosis(x.T, dim=0, fisher=fisher, bias=bias), torch.as_tensor(want))


def test_bad_weight_requests_fail_with_the_fix() -> None:
    with pytest.raises(UnsupportedError, match="reads HookedTransformer weights"):
        weights.congruence(ToyMLP(), 0)
    with pytest.raises(SelectionError, match=r"layer 5 is out of range; the model has layers 0..1"):
        weights.mlp_out(gpt2_style(), 5)
    with pytest.raises(UnsupportedError, match="attention-only"):
        weights.mlp_out(attn_only(), 0)
    with pytest.raises(InputError, match=r"vectors \['1'\] are zero"):
        weights.cosine_matrix(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    with pytest.raises(OptionError, match="kind='sideways'"):
        weights.congruence(gpt2_style(), 0, kind="sideways")
    with pytest.raises(SelectionError, match=r"top_k: k=9 is out of range; choose 1 <= k <= 3"):
        weights.top_k(torch.zeros(2, 3), 9)
    with pytest.raises(SelectionError, match="no vector labelled 'L9N9'"):
        weights.cluster_around(weights.mlp_out(gpt2_style(), 0), "L9N9")
    with pytest.raises(OptionError, match="method='ward'"):
        weights.cosine_matrix(torch.eye(3), method="ward")
    assert np.isfinite(weights.cosine_matrix(torch.eye(3), cluster=False).matrix.numpy()).all()


def test_weight_results_save_and_load_exactly(tmp_path) -> None:
    cm = weights.cosine_matrix(torch.randn(6, 4, generator=torch.Generator().manual_seed(0)))
    back = ti.results.Result.load(cm.save(tmp_path / "cm.safetensors"))
    assert type(back).__name__ == "CosineMatrix" and torch.equal(back.order, cm.order)
    assert torch.equal(back.matrix, cm.matrix) and back.ordered_labels == cm.ordered_labels
    c = weights.congruence(gpt2_style(), 0)
    again = ti.results.Result.load(c.save(tmp_path / "c.safetensors"))
    assert type(again).__name__ == "Congruence" and torch.equal(again.values, c.values)
    assert again.provenance.settings["weights_processed"] is False


def test_congruence_reads_chosen_neurons_and_tokens_as_the_full_table_does() -> None:
    model = with_random_gains(gpt2_style())
    full = weights.congruence(model, 1)
    part = weights.congruence(model, 1, neurons=[5, 2], token_ids=[0, 7])
    assert_close(part.values, full.values[[5, 2]][:, [0, 7]])
    assert part.labels["d_mlp"] == ("L1N5", "L1N2")
    one = weights.congruence(model, 1, kind="in", neurons=[3])
    assert_close(one.values, weights.congruence(model, 1, kind="in").values[[3]])
    with pytest.raises(SelectionError, match=r"neurons must be non-empty indices in \[0, 64\)"):
        weights.congruence(model, 1, neurons=[64])


# -- issue 10's reliability probes (formerly tests/test_reliability_statistics.py), beside the module they test --
def gaussian(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_clusters_refuses_zero_clusters() -> None:
    cm = weights.cosine_matrix(gaussian(6, 3, seed=10))
    with pytest.raises(SelectionError, match=r"n_clusters=0 with 6 vectors; choose an int in \[1, 6\]"):
        cm.clusters(0)  # before: one cluster per row
    assert cm.clusters(2).unique().numel() == 2


def test_kurtosis_names_an_axis_that_does_not_exist_and_matches_scipy_otherwise() -> None:
    z = gaussian(6, 20, seed=15)
    with pytest.raises(SelectionError, match=r"kurtosis: dim=5 but X has 2 axes \(shape \(6, 20\)\)"):
        weights.kurtosis(z, dim=5)  # before: IndexError "tuple index out of range"
    assert_close(weights.kurtosis(z * 1e200, dim=1), torch.as_tensor(scipy.stats.kurtosis(z.numpy(), axis=1)))
