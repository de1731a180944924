"""ti.circuits with per_position=True: an edge per position, named as the reference's positional
graph names it, scored exactly against a hand-hooked loop that patches one edge at one position,
summing to the position-free scores where the model is linear, refused on padded batches."""

import pytest
import torch

import tl_interp as ti
from tests import _circuits_reference as ref
from tests.conftest import _cfg, gpt2_style, hooked_model, llama_style
from tests.test_circuits import METRIC, _pair, _per_prompt, gemma_style
from tl_interp.circuits._circuit import Circuit
from tl_interp.errors import InputError

FAMILIES = {"gpt2": gpt2_style, "llama_gqa_rotary_rms": llama_style, "gemma": gemma_style}


def _edge_at_position_by_hand(model, clean, corrupted, edge: str, pos: int):
    """(n_prompts,) effect of patching the (position-free) ``edge`` at ``pos`` only: one forward."""
    with ref.flags(model), torch.no_grad():
        _, cc = model.run_with_cache(clean)
        _, kc = model.run_with_cache(corrupted)
        base = _per_prompt(model(clean))
        sender, receiver = edge.split("->")
        delta = ref.delta_of(model, cc, lambda s: ref.sender_out(model, kc, s), [sender]).clone()
        keep = torch.zeros(delta.shape[1], dtype=torch.bool)
        keep[pos] = True
        delta[:, ~keep] = 0
        hook, head = ref.receiver_at(model, receiver)
        return _per_prompt(model.run_with_hooks(clean, fwd_hooks=[(hook, ref.adder(delta, head))])) - base


def test_aware_edges_carry_the_references_positional_names_one_per_edge_and_position():
    model = gpt2_style()
    clean, corrupted = _pair(seq=5)
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", per_position=True, progress=False)
    plain = ti.circuits.graph(model)
    assert len(scores.names) == 5 * len(plain.edges)
    assert scores.names[:5] == tuple(f"input_{p}->a0.h0_{p}<q>" for p in range(5))
    assert "a0.h1_3->a1.h0_3<k>" in scores.names and "m1_4->logits_4" in scores.names
    assert scores.graph.n_pos == 5 and scores.graph.edges == scores.names


@pytest.mark.parametrize("family", list(FAMILIES))
def test_exact_aware_scores_equal_patching_one_edge_at_one_position_by_hand(family):
    model = FAMILIES[family]()
    clean, corrupted = _pair(seq=5)
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", per_position=True, progress=False)
    plain = ti.circuits.graph(model).edges
    gen = torch.Generator().manual_seed(0)
    # every kind of receiver input, a changed and an unchanged position, plus random draws
    picks = [(e, p) for e in (plain[0], plain[3 * model.cfg.n_heads], plain[-1], next(e for e in plain if "<k>" in e
                                                                                        and e.startswith("a0")))
             for p in (1, 3, 4)]
    picks += [(plain[i], int(p)) for i, p in zip(torch.randint(len(plain), (8,), generator=gen).tolist(),
                                                 torch.randint(5, (8,), generator=gen).tolist())]
    for edge, pos in picks:
        index = scores.names.index(ti.circuits._graph.at_position(edge, pos))
        expected = _edge_at_position_by_hand(model, clean, corrupted, edge, pos)
        torch.testing.assert_close(scores.per_prompt[:, index], expected, atol=1e-5, rtol=0, msg=f"{edge} at {pos}")


def test_on_a_model_linear_in_its_edges_aware_scores_sum_over_positions_to_the_edge_scores():
    model = hooked_model(_cfg(attn_only=True, d_mlp=None, act_fn=None, normalization_type=None)).eval()
    with torch.no_grad():
        for block in model.blocks:
            block.attn.W_Q.zero_()
    clean, corrupted = _pair(seq=5)
    for method in ("eap", "eap-ig-inputs", "eap-ig-activations", "exact"):
        summed = ti.circuits.attribute(model, clean, corrupted, METRIC, method=method, progress=False)
        aware = ti.circuits.attribute(model, clean, corrupted, METRIC, method=method, per_position=True, progress=False)
        by_position = aware.per_prompt.reshape(len(clean), -1, 5)
        torch.testing.assert_close(by_position.sum(-1), summed.per_prompt, atol=1e-4, rtol=1e-4, msg=method)


def test_eap_aware_scores_sum_over_positions_to_eap_on_any_model():
    model = llama_style()  # EAP is linear in the sender differences at every position
    clean, corrupted = _pair(seq=5)
    summed = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", progress=False)
    aware = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", per_position=True, progress=False)
    torch.testing.assert_close(aware.per_prompt.reshape(len(clean), -1, 5).sum(-1), summed.per_prompt,
                               atol=1e-5, rtol=1e-5)


def test_a_padded_batch_is_refused_for_aware_positions_with_the_fix():
    model = gpt2_style()
    clean, corrupted = _pair(rows=2, seq=6)
    mask = torch.tensor([[1] * 6, [1] * 4 + [0] * 2])
    batch = ti.models.Tokenized(clean, mask, torch.tensor([5, 3]), [["x"] * 6] * 2)
    other = ti.models.Tokenized(corrupted, mask, torch.tensor([5, 3]), [["x"] * 6] * 2)
    with pytest.raises(InputError, match=r"same token length.*one call per length.*per_position=False"):
        ti.circuits.attribute(model, batch, other, METRIC, method="exact", per_position=True, progress=False)


def test_aware_circuits_are_evaluated_exactly_and_round_trip_as_files(tmp_path):
    model = gpt2_style()
    clean, corrupted = _pair(seq=5)
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", per_position=True, progress=False)
    circuit = Circuit.top(scores, 40)
    assert all("_" in e.split("->")[0] for e in circuit.edges)
    result = ti.circuits.faithfulness(model, clean, corrupted, [circuit, scores.names, []], METRIC,
                                      per_position=True, progress=False)
    with ref.flags(model), torch.no_grad():
        _, kc = model.run_with_cache(corrupted)
    expected = _aware_circuit_by_hand(model, clean, kc, circuit.edges)
    torch.testing.assert_close(result.values[0], expected, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(result.values[1], _per_prompt(model(clean)), atol=1e-5, rtol=0)
        torch.testing.assert_close(result.values[2], _per_prompt(model(corrupted)), atol=1e-5, rtol=0)
    circuit.to_json(tmp_path / "c.json", d_model=model.cfg.d_model)
    back = Circuit.from_json(tmp_path / "c.json", scores.graph)
    assert back.edges == circuit.edges


def _aware_circuit_by_hand(model, clean, other_cache, circuit):
    """Every (edge, position) outside ``circuit`` carries the other run's sender value at that
    position; senders read live; one forward."""
    circuit = set(circuit)
    n_pos = clean.shape[1]
    current, hooks = {}, []
    senders = {"hook_embed"} | {f"blocks.{l}.attn.hook_result" for l in range(model.cfg.n_layers)} | {
        f"blocks.{l}.hook_mlp_out" for l in range(model.cfg.n_layers)}
    hooks += [(name, lambda act, hook: current.__setitem__(hook.name, act)) for name in senders]
    missing: dict = {}
    for edge in ti.circuits.graph(model).edges:
        sender, receiver = edge.split("->")
        for p in range(n_pos):
            if ti.circuits._graph.at_position(edge, p) not in circuit:
                missing.setdefault(ref.receiver_at(model, receiver), []).append((sender, p))

    def make(head, pairs):
        def corrupt(act, hook):
            act = act.clone()
            for sender, p in pairs:
                d = ref.sender_out(model, other_cache, sender)[:, p] - ref.sender_out(model, current, sender)[:, p]
                if head is None:
                    act[:, p] += d
                else:
                    act[:, p, head] += d
            return act
        return corrupt

    hooks += [(hook, make(head, pairs)) for (hook, head), pairs in missing.items()]
    with ref.flags(model), torch.no_grad():
        return _per_prompt(model.run_with_hooks(clean, fwd_hooks=hooks))


def test_the_faithfulness_curve_of_aware_scores_evaluates_aware_circuits():
    model = gpt2_style()
    clean, corrupted = _pair(seq=5)
    scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="eap", per_position=True, progress=False)
    curve = ti.circuits.faithfulness_curve(model, clean, corrupted, scores, METRIC, budgets=(0.01, 0.1, 1.0),
                                           n_boot=20, progress=False)
    direct = ti.circuits.faithfulness(model, clean, corrupted,
                                      [Circuit.top(scores, int(b * len(scores.names))) for b in (0.01, 0.1)], METRIC,
                                      per_position=True, progress=False)
    torch.testing.assert_close(curve.values[0, :2].double(), direct.normalized.double(), atol=1e-5, rtol=1e-5)
    assert curve.values[0, -1].item() == pytest.approx(1.0, abs=1e-4)
