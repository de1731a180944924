"""Every ti.weights reading is the same whether TransformerLens processed the model's weights or not.

A small random HookedTransformer (LayerNorm, LayerNorm with a gated MLP, RMSNorm) with gains,
norm biases and unembedding biases far from their defaults is loaded twice from one state dict:
as is, and through ``load_and_process_state_dict`` with ``from_pretrained``'s flags (and other
flag combinations a user may pick). Each public function of ``ti.weights`` must then agree.
"""

import copy
from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import hooked_model
from tl_interp.compat.tl import hooked_config_class

weights = ti.weights

ALL = dict(fold_ln=True, center_writing_weights=True, center_unembed=True, fold_value_biases=True)
FLAGS = {
    "from_pretrained": ALL,
    "fold_ln only": dict(fold_ln=True, center_writing_weights=False, center_unembed=False, fold_value_biases=False),
    "centred, not folded": dict(fold_ln=False, center_writing_weights=True, center_unembed=True,
                                fold_value_biases=True),
}
NORMS = {
    "LN": dict(normalization_type="LN", act_fn="gelu_new"),
    "LN gated": dict(normalization_type="LN", act_fn="silu", gated_mlp=True),
    "RMS": dict(normalization_type="RMS", act_fn="silu", gated_mlp=True, positional_embedding_type="rotary",
                rotary_dim=8, final_rms=True),
}


def _config(norm: str) -> Any:
    return hooked_config_class()(n_layers=2, d_model=16, n_heads=2, d_head=8, d_mlp=24, d_vocab=40, n_ctx=8,
                                 seed=0, **NORMS[norm])


def _state_dict(norm: str) -> dict[str, torch.Tensor]:
    """A state dict whose gains, norm biases and unembedding bias are far from 1 / 0."""
    g = torch.Generator().manual_seed(11)
    sd = hooked_model(_config(norm)).state_dict()
    for name, p in sd.items():
        if name.endswith((".w",)) and "ln" in name:
            sd[name] = 0.3 + 1.5 * torch.rand(p.shape, generator=g)
        elif name.endswith(".b") and "ln" in name and NORMS[norm].get("gated_mlp"):
            # TransformerLens folds ln2's bias into b_in but HookedTransformer's gate has no bias to
            # take it, so processing a gated LayerNorm model with norm biases changes its outputs
            continue
        elif name.endswith((".b", "b_U", "b_in", "b_out", "b_O", "b_V")):
            sd[name] = 0.3 * torch.randn(p.shape, generator=g)
        elif name.endswith(("W_U", "W_E", "W_out", "W_in", "W_gate")):
            # an offset along d_model and the vocabulary, which centring must remove on both paths
            sd[name] = p + 0.2 * torch.randn(p.shape[-1], generator=g)
    return sd


def _both(norm: str, flags: dict[str, bool]) -> tuple[Any, Any]:
    sd = _state_dict(norm)
    plain = hooked_model(_config(norm)).eval()
    plain.load_state_dict(copy.deepcopy(sd))
    done = hooked_model(_config(norm)).eval()
    done.load_and_process_state_dict(copy.deepcopy(sd), **flags)
    return plain, done


def _same(a, b) -> None:
    assert_close(torch.as_tensor(a), torch.as_tensor(b), atol=2e-5, rtol=2e-5)


@pytest.fixture(params=[(n, f) for n in NORMS for f in FLAGS], ids=lambda p: f"{p[0]}-{p[1]}")
def pair(request):
    norm, flags = request.param
    return _both(norm, FLAGS[flags])


def test_the_two_models_compute_the_same_log_probabilities(pair) -> None:
    # the premise: processing changes the weights, not the model
    plain, done = pair
    tokens = torch.tensor([[1, 5, 9, 2, 33, 7]])
    _same(plain(tokens).log_softmax(-1), done(tokens).log_softmax(-1))


def test_every_vector_reading_is_the_same_processed_or_not(pair) -> None:
    plain, done = pair
    _same(weights.embedding(plain).matrix, weights.embedding(done).matrix)
    _same(weights.unembedding(plain).matrix, weights.unembedding(done).matrix)
    for layer in range(2):
        _same(weights.mlp_out(plain, layer).matrix, weights.mlp_out(done, layer).matrix)
        _same(weights.mlp_in(plain, layer).matrix, weights.mlp_in(done, layer).matrix)
        if plain.cfg.gated_mlp:
            _same(weights.mlp_in(plain, layer, gate=True).matrix, weights.mlp_in(done, layer, gate=True).matrix)
    fp, fd = weights.fold(plain), weights.fold(done)
    for read in ("embed", "unembed"):
        _same(getattr(fp, read)(), getattr(fd, read)())
    _same(fp.mlp_in(1), fd.mlp_in(1))
    _same(fp.mlp_out(1), fd.mlp_out(1))
    assert weights.token_labels(plain) == weights.token_labels(done)


def test_every_analysis_of_the_readings_is_the_same_processed_or_not(pair) -> None:
    plain, done = pair
    for read in (weights.unembedding, weights.embedding, lambda m: weights.mlp_in(m, 0),
                 lambda m: weights.mlp_out(m, 1)):
        p, d = read(plain), read(done)
        _same(weights.norms(p).values, weights.norms(d).values)
        cp, cd = weights.cosine_matrix(p), weights.cosine_matrix(d)
        _same(cp.matrix, cd.matrix)
        assert torch.equal(cp.order, cd.order)
        assert torch.equal(cp.clusters(3), cd.clusters(3))
        assert weights.cluster_around(p, 0, threshold=0.2).labels == weights.cluster_around(d, 0, threshold=0.2).labels
        _same(weights.kurtosis(p.matrix), weights.kurtosis(d.matrix))
        _same(weights.orthogonalize(p.matrix[0], p.matrix[1:3]), weights.orthogonalize(d.matrix[0], d.matrix[1:3]))
        _same(weights.as_vectors(p).matrix, weights.as_vectors(d).matrix)
    kinds = ("out", "in", "gate") if plain.cfg.gated_mlp else ("out", "in")
    for kind in kinds:
        for layer in range(2):
            cp, cd = weights.congruence(plain, layer, kind=kind), weights.congruence(done, layer, kind=kind)
            _same(cp.values, cd.values)
            _same(cp.kurtosis(), cd.kurtosis())
            assert cp.top(3).columns["index"] == cd.top(3).columns["index"]
            _same(torch.tensor(cp.top(4, absolute=False).values), torch.tensor(cd.top(4, absolute=False).values))
            part = dict(neurons=[3, 1], token_ids=[0, 7, 9])
            _same(weights.congruence(plain, layer, kind=kind, **part).values,
                  weights.congruence(done, layer, kind=kind, **part).values)


def test_the_readings_are_the_weights_transformer_lens_processing_leaves(pair) -> None:
    """The reference: from_pretrained's processing, applied to the unprocessed model by TransformerLens."""
    plain, _ = pair
    ref = copy.deepcopy(plain)
    ref.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)
    _same(weights.unembedding(plain).matrix, ref.W_U.detach().double().T)
    _same(weights.embedding(plain).matrix, ref.W_E.detach().double())
    _same(weights.mlp_in(plain, 1).matrix, ref.blocks[1].mlp.W_in.detach().double().T)
    _same(weights.mlp_out(plain, 1).matrix, ref.blocks[1].mlp.W_out.detach().double())
    if plain.cfg.gated_mlp:
        _same(weights.mlp_in(plain, 1, gate=True).matrix, ref.blocks[1].mlp.W_gate.detach().double().T)
