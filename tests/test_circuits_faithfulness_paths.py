"""The paths batched faithfulness takes: every circuit's rows edited together on the ordinary forward
(``_rows.CircuitRows``) where that is exact, per-head cells elsewhere; each says which ran, and each
equals a brute-force hook loop (one forward per circuit, every edge outside it patched by hand)."""

import pytest
import torch

import tl_interp as ti
from tests.circuits_reference import brute_force_faithfulness
from tests.conftest import _cfg, _hooked, attn_only, gpt2_style, llama_style
from tests.test_circuits import gemma_style
from tests.test_circuits_verify import _task
from tl_interp import circuits
from tl_interp.engine.stack import bound_cells, stack
from tl_interp.intervention import Intervention

ROWS_ON = {"gpt2": gpt2_style, "llama_gqa_rotary": llama_style, "attn_only": attn_only}


def _nested(graph, seed: int = 0):
    """Top-k style circuits: nested, of sizes 0 .. every edge, as a faithfulness curve builds them."""
    order = torch.randperm(len(graph.edges), generator=torch.Generator().manual_seed(seed)).tolist()
    return [[graph.edges[i] for i in order[:k]] for k in (0, 1, 3, 10, 40, len(order) // 2, len(order))]


@pytest.mark.parametrize("family", list(ROWS_ON))
def test_circuit_rows_equal_the_brute_force_loop_and_say_they_ran(family) -> None:
    model = ROWS_ON[family]()
    clean, corrupted, metric, score = _task(model)
    chosen = _nested(circuits.graph(model))
    result = circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False)
    settings = result.provenance.settings
    assert settings["circuit_rows"] == "on"
    # the final block at the last position alone, its hooks in both of split_final's steps (GQA ungrouped too:
    # passes start at position 0, so no cached prefix of n_key_value_heads is involved)
    assert settings["final_block_split"] == settings["passes"] > 0
    assert settings["senders_read"] == "corrupted prompts, in the clean base run's forward pass"
    reference = brute_force_faithfulness(model, clean, corrupted, chosen, score)
    torch.testing.assert_close(result.values.double(), reference.double(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", ["llama_gqa_rotary", "gpt2"])
def test_one_circuit_per_pass_equals_every_circuit_in_one_pass(family) -> None:
    # a memory budget of one cell per pass: each circuit's hooks then edit its rows alone
    # (circuits that edit nothing before the last layer included: their passes still start at layer 0)
    model = ROWS_ON[family]()
    clean, corrupted, metric, score = _task(model, seed=1)
    g = circuits.graph(model)
    late = [[e for e in g.edges if not e.endswith(end)] for end in ("logits", "m1")]
    chosen = [*late, *_nested(g, seed=1), *late]
    together = circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False)
    alone = circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False, memory_mb=1e-3)
    reference = brute_force_faithfulness(model, clean, corrupted, late, score)
    torch.testing.assert_close(alone.values[:2].double(), reference.double(), atol=1e-5, rtol=0)
    assert together.provenance.settings["passes"] == 1
    assert alone.provenance.settings["passes"] == together.provenance.settings["circuits_evaluated"]
    torch.testing.assert_close(alone.values, together.values, atol=1e-5, rtol=0)
    torch.testing.assert_close(alone.corrupted, together.corrupted, atol=1e-5, rtol=0)


@pytest.mark.parametrize("family", list(ROWS_ON))
def test_the_final_block_at_the_last_position_equals_the_whole_block(family, monkeypatch) -> None:
    # split_final runs the rows' hooks in the final block twice (keys/values on every position, then the
    # last position); hooks that do not declare they follow windows make the pass run the whole block
    model = ROWS_ON[family]()
    clean, corrupted, metric, _ = _task(model, seed=3)
    chosen = _nested(circuits.graph(model), seed=3)
    split = circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False)
    monkeypatch.setattr(ti.circuits._rows._RowsHook, "windowed", False)
    whole = circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False)
    assert split.provenance.settings["final_block_split"] > 0 and whole.provenance.settings["final_block_split"] == 0
    torch.testing.assert_close(split.values, whole.values, atol=1e-5, rtol=0)
    torch.testing.assert_close(split.corrupted, whole.corrupted, atol=1e-5, rtol=0)


def test_repeated_circuits_are_evaluated_once_and_the_full_circuit_is_the_clean_run() -> None:
    model = gpt2_style()
    clean, corrupted, metric, score = _task(model)
    g = circuits.graph(model)
    some = _nested(g)[3]
    result = circuits.faithfulness(model, clean, corrupted, [g.edges, some, list(reversed(some)), g.edges, []],
                                   metric, progress=False)
    assert result.provenance.settings["circuits_evaluated"] == 1  # `some`; the empty circuit is the corrupted run
    assert result.provenance.settings["empty_circuit"] == "the corrupted run"
    assert torch.equal(result.values[0], result.clean) and torch.equal(result.values[3], result.clean)
    assert torch.equal(result.values[1], result.values[2]) and torch.equal(result.values[4], result.corrupted)
    with torch.no_grad():
        torch.testing.assert_close(result.clean, score(model(clean)), atol=1e-5, rtol=0)


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_circuit_rows_with_mean_and_zero_ablation_equal_the_brute_force_loop(ablation) -> None:
    model = llama_style()
    clean, corrupted, metric, score = _task(model, seed=2)
    chosen = _nested(circuits.graph(model), seed=2)[1:-1]
    result = circuits.faithfulness(model, clean, corrupted, chosen, metric, ablation=ablation, progress=False)
    assert result.provenance.settings["circuit_rows"] == "on"
    assert result.provenance.settings["senders_read"] == {"mean": "clean prompts and corrupted prompts",
                                                          "zero": "clean prompts"}[ablation]
    if ablation == "zero":  # a bias-free rotary model: an input with every sender excluded is exactly 0
        reference = brute_force_faithfulness(model, clean, corrupted, chosen, score, ablation="zero")
        torch.testing.assert_close(result.values.double(), reference.double(), atol=1e-5, rtol=0)
    else:
        before = ti.circuits._faithfulness.rows_reason
        try:  # the per-head cells, an independent implementation of the same definition
            ti.circuits._faithfulness.rows_reason = lambda *args: "forced off"
            heads = circuits.faithfulness(model, clean, corrupted, chosen, metric, ablation=ablation, progress=False)
        finally:
            ti.circuits._faithfulness.rows_reason = before
        assert heads.provenance.settings["circuit_rows"] == "off: forced off"
        torch.testing.assert_close(result.values, heads.values, atol=1e-5, rtol=0)


def test_where_rows_cannot_be_edited_exactly_the_per_head_cells_run_and_say_why() -> None:
    # (test_circuits checks the values of these cells against hand-patched circuits on Gemma)
    gemma = gemma_style()
    clean, corrupted, metric, _ = _task(gemma)
    result = circuits.faithfulness(gemma, clean, corrupted, _nested(circuits.graph(gemma))[1:4], metric, progress=False)
    assert result.provenance.settings["circuit_rows"].startswith("off: attention outputs are normalised")

    shortformer = _hooked()(_cfg(positional_embedding_type="shortformer")).eval()
    result = circuits.faithfulness(shortformer, clean, corrupted, [[]], metric, progress=False)
    assert result.provenance.settings["circuit_rows"].startswith("off: shortformer")

    model = gpt2_style()
    scores = circuits.attribute(model, clean, corrupted, metric, method="eap", per_position=True, progress=False)
    result = circuits.faithfulness(model, clean, corrupted, [scores.names[:5]], metric, per_position=True,
                                   progress=False)
    assert result.provenance.settings["circuit_rows"] == "off: circuits of edges at positions (per_position=True)"


# -- the stack's `together` protocol -------------------------------------------------------------
class _Scale:
    """A cell's hook scaling its rows by ``payload``; stacked, one call scales every cell's rows."""

    calls: list[list[float | None]] = []

    def __init__(self, payload: float) -> None:
        self.payload = payload

    @staticmethod
    def together(act, hook, payloads, batch):
        _Scale.calls.append(list(payloads))
        scale = torch.tensor([1.0 if p is None else p for p in payloads]).repeat_interleave(batch)
        return act * scale.view(-1, *([1] * (act.ndim - 1)))

    def __call__(self, act, hook):
        return self.together(act, hook, [self.payload], act.shape[0])


def test_stacked_cells_sharing_a_together_function_edit_every_row_in_one_call() -> None:
    model = gpt2_style()
    tokens = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))
    site = "blocks.0.hook_mlp_out"
    cells = [Intervention.single(site, _Scale(0.5)), Intervention.identity(), Intervention.single(site, _Scale(2.0))]
    _Scale.calls.clear()
    with torch.no_grad():
        out = stack(bound_cells(model, cells), 2).run(model, tokens.repeat(3, 1))
        alone = [cell.run(model, tokens) for cell in cells]
    assert _Scale.calls[0] == [0.5, None, 2.0] and len(_Scale.calls) == 3  # one stacked call, then each alone
    for i in range(3):
        torch.testing.assert_close(out[2 * i:2 * i + 2], alone[i], atol=1e-5, rtol=0)
    assert torch.equal(alone[1], model(tokens))  # the row without a hook there is untouched


def test_bound_cells_resolve_each_shared_hook_name_once_and_bind_as_each_cell_alone(monkeypatch) -> None:
    from tl_interp import hooks, intervention

    model = gpt2_style()
    site, calls = "blocks.0.hook_mlp_out", []
    resolve = intervention.resolve
    monkeypatch.setattr(intervention, "resolve", lambda *a, **k: calls.append(a[1]) or resolve(*a, **k))
    cells = [hooks.scale(site, s) + hooks.scale("blocks.1.hook_mlp_out", s) for s in (0.0, 0.5, 2.0)]
    cells.append(Intervention.single(lambda name: name.endswith("hook_mlp_out"), _Scale(3.0)))  # a filter: not shared
    bound = bound_cells(model, cells)
    assert calls.count(site) == 1 and len(calls) == 3  # two shared names once each, the filter once
    for cell, by_name in zip(cells, bound):
        alone = cell.bind(model)
        assert list(by_name) == list(dict.fromkeys(name for name, _ in alone))
        assert sum(len(fns) for fns in by_name.values()) == len(alone)
    tokens = torch.randint(1, 61, (2, 5), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        out = stack(bound, 2).run(model, tokens.repeat(len(cells), 1))
        for i, cell in enumerate(cells):
            torch.testing.assert_close(out[2 * i:2 * i + 2], cell.run(model, tokens), atol=1e-5, rtol=0)
    with pytest.raises(ti.errors.HookNameError, match="blocks.0.hook_nope"):  # unknown names still fail, per cell
        bound_cells(model, [cells[0], hooks.scale("blocks.0.hook_nope", 1.0)])


@pytest.mark.parametrize("family", ["gpt2", "llama_gqa_rotary"])
def test_circuit_rows_on_a_padded_batch_equal_each_prompt_alone(family) -> None:
    # padding: the final block runs whole (split_final needs one last position), the senders come from the
    # corrupted prompts alone (the same attention mask), padding is left out of the rows' residual-stream check,
    # and every row reads its own last token
    model = ROWS_ON[family]()
    clean, corrupted, _, _ = _task(model, seed=4, n=2)
    correct, wrong = torch.tensor([3, 5]), torch.tensor([6, 2])
    mask = torch.tensor([[1] * 7, [1] * 5 + [0] * 2])
    chosen = _nested(circuits.graph(model), seed=4)[1:-1]

    def batch(tokens):
        return ti.models.Tokenized(tokens, mask, torch.tensor([6, 4]), [["x"] * 7] * 2)

    padded = circuits.faithfulness(model, batch(clean), batch(corrupted), chosen,
                                   ti.metrics.logit_diff(correct, wrong), progress=False)
    settings = padded.provenance.settings
    assert settings["circuit_rows"] == "on" and settings["final_block_split"] == 0
    assert settings["senders_read"] == "corrupted prompts, in the clean base run's forward pass"
    long = circuits.faithfulness(model, clean[:1], corrupted[:1], chosen, ti.metrics.logit_diff(correct[:1], wrong[:1]),
                                 progress=False)
    short = circuits.faithfulness(model, clean[1:, :5], corrupted[1:, :5], chosen,
                                  ti.metrics.logit_diff(correct[1:], wrong[1:]), progress=False)
    torch.testing.assert_close(padded.values[:, 0], long.values[:, 0], atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.values[:, 1], short.values[:, 0], atol=1e-5, rtol=0)


def test_when_the_rows_check_fails_after_the_corrupted_run_the_per_head_cells_read_the_clean_senders(monkeypatch) -> None:
    model = gpt2_style()
    clean, corrupted, metric, score = _task(model, seed=5)
    chosen = _nested(circuits.graph(model), seed=5)[1:-1]
    checked = ti.circuits._rows.CircuitRows._rest

    def failing(self, *args):
        out = checked(self, *args)
        self.reason = "forced off"
        return out

    monkeypatch.setattr(ti.circuits._rows.CircuitRows, "_rest", failing)
    result = circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False)
    settings = result.provenance.settings
    assert settings["circuit_rows"] == "off: forced off"
    assert settings["senders_read"] == "corrupted prompts, then clean prompts"
    reference = brute_force_faithfulness(model, clean, corrupted, chosen, score)
    torch.testing.assert_close(result.values.double(), reference.double(), atol=1e-5, rtol=0)


@pytest.mark.parametrize("normalization", ["LN", "LNPre", "RMS", "RMSPre"])
def test_fused_norm_equals_each_tl_norm_and_is_the_module_itself_when_hooked(normalization) -> None:
    from tl_interp import compat

    model = _hooked()(_cfg(normalization_type=normalization)).eval()
    norm = model.blocks[0].ln1
    with torch.no_grad():
        norm.w.copy_(torch.randn_like(norm.w)) if hasattr(norm, "w") else None
        x = torch.randn(5, 3, model.cfg.d_model) * 3 + 1
        fused = compat.fused_norm(norm)
        assert fused is not norm
        torch.testing.assert_close(fused(x), norm(x), atol=1e-6, rtol=1e-6)
    with Intervention.single("blocks.0.ln1.hook_scale", lambda act, hook: act).applied(model):
        assert compat.fused_norm(norm) is norm  # a hook inside the norm must see the norm run


@pytest.mark.parametrize("family", list(ROWS_ON))
def test_the_empty_circuit_is_read_from_the_corrupted_run_and_equals_the_brute_force_loop(family) -> None:
    # corrupted ablation on the same attention mask: every receiver reads the corrupted run's input, so the
    # empty circuit's metric is the corrupted forward's (no stacked cell); equal to a stacked cell and to brute force
    model = ROWS_ON[family]()
    clean, corrupted, metric, score = _task(model, seed=4)
    g = circuits.graph(model)
    some = _nested(g, seed=4)[3]
    result = circuits.faithfulness(model, clean, corrupted, [some, []], metric, progress=False)
    assert result.provenance.settings["empty_circuit"] == "the corrupted run"
    assert result.provenance.settings["circuits_evaluated"] == 1
    assert torch.equal(result.values[1], result.corrupted)
    reference = brute_force_faithfulness(model, clean, corrupted, [some, []], score)
    torch.testing.assert_close(result.values.double(), reference.double(), atol=1e-5, rtol=0)
    alone = circuits.faithfulness(model, clean, corrupted, [[]], metric, progress=False)  # nothing else to stack
    assert alone.provenance.settings["empty_circuit"] == "a stacked cell"
    torch.testing.assert_close(alone.corrupted, result.corrupted, atol=1e-5, rtol=0)


@pytest.mark.parametrize("ablation", ["mean", "zero"])
def test_the_empty_circuit_is_a_stacked_cell_when_it_is_not_the_corrupted_run(ablation) -> None:
    model = gpt2_style()
    clean, corrupted, metric, score = _task(model, seed=5)
    some = _nested(circuits.graph(model), seed=5)[3]
    result = circuits.faithfulness(model, clean, corrupted, [some, []], metric, ablation=ablation, progress=False)
    assert result.provenance.settings["empty_circuit"] == "a stacked cell"
    assert result.provenance.settings["circuits_evaluated"] == 2
    if ablation == "zero":  # (the reference loop's mean is another definition: see the test above)
        reference = brute_force_faithfulness(model, clean, corrupted, [some, []], score, ablation=ablation)
        torch.testing.assert_close(result.values.double(), reference.double(), atol=1e-5, rtol=0)
    with torch.no_grad():  # not the corrupted run
        assert not torch.allclose(result.corrupted, score(model(corrupted)), atol=1e-3)


@pytest.mark.parametrize("family", list(ROWS_ON))
def test_the_corrupted_prompts_ride_in_the_engine_base_run_unless_an_executor_runs_it(family) -> None:
    # run locally, one forward pass gives the engine's clean base run and the corrupted senders; an executor
    # makes its own base run, so the corrupted prompts then run alone: both equal the brute-force loop
    from tl_interp.engine.executors import LocalExecutor

    model = ROWS_ON[family]()
    clean, corrupted, metric, score = _task(model, seed=6)
    chosen = _nested(circuits.graph(model), seed=6)
    together = circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False)
    apart = circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False, executor=LocalExecutor())
    assert together.provenance.settings["senders_read"] == "corrupted prompts, in the clean base run's forward pass"
    assert apart.provenance.settings["senders_read"] == "corrupted prompts alone"
    assert together.provenance.settings["empty_circuit"] == apart.provenance.settings["empty_circuit"] == "the corrupted run"
    reference = brute_force_faithfulness(model, clean, corrupted, chosen, score)
    torch.testing.assert_close(together.values.double(), reference.double(), atol=1e-5, rtol=0)
    torch.testing.assert_close(together.values, apart.values, atol=1e-6, rtol=0)
    torch.testing.assert_close(together.clean, apart.clean, atol=1e-6, rtol=0)
    torch.testing.assert_close(together.corrupted, apart.corrupted, atol=1e-6, rtol=0)


def test_one_weight_layout_for_the_study_is_restored_and_sees_weights_edited_in_place() -> None:
    model = llama_style()  # gated MLP, grouped-query attention: every relaid kind
    clean, corrupted, metric, score = _task(model)
    chosen = _nested(circuits.graph(model))
    stored = {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()}
    first = circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False)
    assert {n: (p.data_ptr(), p.stride()) for n, p in model.named_parameters()} == stored
    with torch.no_grad():
        model.blocks[0].attn.W_Q.mul_(-2.0)
    second = circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False)
    reference = brute_force_faithfulness(model, clean, corrupted, chosen, score)
    torch.testing.assert_close(second.values.double(), reference.double(), atol=1e-5, rtol=0)
    assert not torch.allclose(first.values, second.values)
