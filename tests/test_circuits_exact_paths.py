"""Fast paths of exact single-edge patching, each against patching the edge by hand: where the
receiving layer is off, edges into the last layer's keys and values run the final block at the
last position alone (``engine.paths.split_final``), and the engine says it took that path."""

import torch
from transformer_lens import HookedTransformer

import tl_interp as ti
from tl_interp import hooks
from tl_interp.engine.inputs import as_batch
from tl_interp.engine.run import BaseRun, EngineOptions
from tests import _circuits_reference as ref
from tests.conftest import _cfg, gpt2_style, llama_style

METRIC = ti.metrics.logit_diff(3, 5)


def _per_prompt(logits):
    return logits[:, -1, 3] - logits[:, -1, 5]


def _pair(seed=0, rows=3, seq=7, vocab=61, changed=slice(2, 4)):
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, vocab, (rows, seq), generator=g)
    corrupted = clean.clone()
    corrupted[:, changed] = torch.randint(1, vocab, (rows, changed.stop - changed.start), generator=g)
    return clean, corrupted


def rotary_mha() -> HookedTransformer:
    """Rotary positions, RMSNorm, a gated MLP, one key/value per head (so TL's cache runs it)."""
    return HookedTransformer(_cfg(n_layers=3, act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary",
                                  rotary_dim=8, gated_mlp=True, final_rms=True)).eval()


def _last_layer_kv_edges(names, n_layers):
    last = f"a{n_layers - 1}."
    return [i for i, name in enumerate(names) if name.split("->")[1].startswith(last) and name[-3:] in ("<k>", "<v>")]


def test_edges_into_the_last_layers_keys_and_values_equal_the_hand_loop_and_run_the_final_block_at_the_last_position():
    # the receiving layer off (soft-capped scores): the cells edit the last layer's keys/values on
    # the ordinary forward; llama_style: grouped-query attention, ungrouped (a key per query head)
    for model in (gpt2_style(), rotary_mha(), llama_style()):
        model.cfg.attn_scores_soft_cap = 50.0
        clean, corrupted = _pair()
        scores = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", progress=False)
        settings = scores.provenance.settings
        assert settings["receiving_layer"].startswith("off") and settings["receiving_cells"] == 0
        assert settings["engine"]["split_final"] == "on" and settings["final_kv_split"] > 0
        some = _last_layer_kv_edges(scores.names, model.cfg.n_layers)
        assert len(some) == 2 * model.cfg.n_heads * (1 + (model.cfg.n_layers - 1) * (model.cfg.n_heads + 1))
        expected = ref.single_edges(model, clean, corrupted, _per_prompt, [scores.names[i] for i in some])
        torch.testing.assert_close(scores.per_prompt[:, some], expected, atol=1e-5, rtol=0)


def test_final_key_value_edits_that_start_mid_sequence_equal_the_edit_run_by_hand():
    # engine level: cells that patch the final block's keys or values from position 4 on run
    # positions 4.. against the base run's cached prefix, and the block at the last position only
    model = rotary_mha()
    clean, corrupted = _pair(seq=8)
    _, cache = model.run_with_cache(corrupted)
    last = model.cfg.n_layers - 1
    cells = [hooks.patch(f"blocks.{last}.attn.hook_{kv}", cache[f"blocks.{last}.attn.hook_{kv}"], positions=pos,
                         heads=[head])
             for kv in "kv" for head in range(model.cfg.n_heads) for pos in (4, 6, 7)]
    metric = METRIC
    base = BaseRun(model, as_batch(model, clean), metric, [n for c in cells for n, _ in c.bind(model)])
    values = base.evaluate(cells)
    assert base.stats["final_kv_split"] > 0 and base.stats["prefix_passes"] > 0
    for cell, value in zip(cells, values):
        torch.testing.assert_close(value, _per_prompt(cell.run(model, clean)), atol=1e-5, rtol=0)
    assert not torch.allclose(values, values[:1].expand_as(values))  # the edits change the metric


def test_a_metric_that_names_its_vocabulary_entries_is_unembedded_at_those_alone_with_the_same_values():
    # logit_diff reads two columns: the engine computes those alone (head_columns), the values match
    # the model's full unembedding; a log-probability reads every column and keeps the full head
    model = gpt2_style()
    clean, corrupted = _pair()
    _, cache = model.run_with_cache(corrupted)
    cells = [hooks.patch("blocks.1.hook_resid_pre", cache["blocks.1.hook_resid_pre"], positions=p) for p in range(7)]
    batch = as_batch(model, clean)
    for metric, on in ((METRIC, True), (ti.metrics.answer_logprob(3), False)):
        base = BaseRun(model, batch, metric, ["blocks.1.hook_resid_pre"])
        assert base.paths["head_columns"].startswith("on") is on
        values = base.evaluate(cells)
        expected = torch.stack([metric.per_prompt(cell.run(model, clean), batch) for cell in cells])
        torch.testing.assert_close(values, expected, atol=1e-5, rtol=0)
        assert torch.isfinite(values).all()
    off = BaseRun(model, batch, METRIC, options=EngineOptions(fast_paths=False))
    assert off.paths["head_columns"].startswith("off")


def test_logit_diff_names_the_answers_it_reads_and_missing_answers_read_nothing():
    assert METRIC.narrowed()[0].tolist() == [3, 5]
    assert ti.metrics.logit_diff(torch.tensor([7, -1, 2]), torch.tensor([2, 9, -1])).narrowed()[0].tolist() == [2, 7, 9]
    assert ti.metrics.answer_logprob(3).narrowed() is None


class _Declared:
    """A hook that adds ``delta`` from position ``first`` on, declaring that footprint; counts its calls."""

    def __init__(self, delta, first):
        self.delta, self.footprint, self.calls = delta, first, 0

    def __call__(self, act, hook):
        self.calls += 1
        if self.footprint is None:
            return act
        out = act.clone()
        offset = act.shape[1] - (7 - self.footprint)  # the pass's window ends at position 7
        out[:, max(offset, 0):] += self.delta
        return out


def test_a_declared_footprint_is_taken_at_its_word_without_running_the_hook_on_the_base_run():
    # skip_unchanged reads a cell's declared first changed position (or None: unchanged) instead
    # of running its hook; the pass then starts there, and values equal the edit run by hand
    from tl_interp.intervention import Intervention

    model = gpt2_style()
    clean, _ = _pair()
    hooks_ = [_Declared(0.5, 3), _Declared(0.5, 5), _Declared(0.0, None)]
    cells = [Intervention.single("blocks.1.hook_resid_pre", h, "declared") for h in hooks_]
    base = BaseRun(model, as_batch(model, clean), METRIC, ["blocks.1.hook_resid_pre"])
    values = base.evaluate(cells)
    assert [h.calls for h in hooks_] == [1, 1, 0]  # once in its pass; never on the base run
    assert base.stats["cells_skipped"] == 1 and base.stats["prefix_passes"] > 0
    for h, cell, value in zip(hooks_[:2], cells, values):
        torch.testing.assert_close(value, _per_prompt(cell.run(model, clean)), atol=1e-5, rtol=0)
    torch.testing.assert_close(values[2], base.values)


def test_cells_that_edit_only_the_final_residual_run_no_block_and_equal_the_edit_run_by_hand():
    # engine level: nothing upstream of blocks.{last}.hook_resid_post moved, so the cells' hooks edit
    # the base run's final residual and no block runs in their passes; values equal each edit by hand
    model = rotary_mha()
    clean, corrupted = _pair()
    _, cache = model.run_with_cache(corrupted)
    site = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
    cells = [hooks.patch(site, cache[site], positions=pos) for pos in (3, 5, 6)] + [hooks.scale(site, 0.5)]
    base = BaseRun(model, as_batch(model, clean), METRIC, [site])
    calls = []
    handle = model.blocks[-1].register_forward_pre_hook(lambda module, args: calls.append(1))
    try:
        values = base.evaluate(cells)
    finally:
        handle.remove()
    assert calls == [] and base.stats["passes"] > 0
    for cell, value in zip(cells, values):
        torch.testing.assert_close(value, _per_prompt(cell.run(model, clean)), atol=1e-5, rtol=0)
    assert not torch.allclose(values[2], values[0])  # the patch at the read position moves the metric


def _zoo_ordinal():
    from tests.test_circuits_families import _zoo_task

    model, clean, corrupted, metric, score = _zoo_task("ordinal-4l")
    return model, clean, corrupted, metric, score


def test_run_here_the_senders_are_read_in_the_engines_base_run_and_equal_the_separate_forwards_and_the_hand_loop():
    from tl_interp.engine.executors import LocalExecutor

    clean, corrupted = _pair()
    cases = [(llama_style(), clean, corrupted, METRIC, _per_prompt), _zoo_ordinal()]
    for model, clean, corrupted, metric, score in cases:
        shared = ti.circuits.attribute(model, clean, corrupted, metric, method="exact", progress=False)
        apart = ti.circuits.attribute(model, clean, corrupted, metric, method="exact", executor=LocalExecutor(),
                                      progress=False)
        assert shared.provenance.settings["senders_read"].endswith("in the engine's base run (one forward pass)")
        assert apart.provenance.settings["senders_read"].startswith("clean and corrupted forwards apart (an executor")
        # fewer base runs' worth of forwards, the same numbers: effects and both runs' metric
        torch.testing.assert_close(shared.per_prompt, apart.per_prompt, atol=1e-6, rtol=0)
        for run in ("clean", "corrupted"):  # logit differences up to ~16 on ordinal-4l: float32 rounding of those
            torch.testing.assert_close(shared.extras[run], apart.extras[run], atol=1e-6, rtol=1e-6)
        with torch.no_grad():
            torch.testing.assert_close(shared.extras["corrupted"], score(model(corrupted)), atol=1e-5, rtol=0)
        some = list(range(0, len(shared.names), max(1, len(shared.names) // 24)))
        expected = ref.single_edges(model, clean, corrupted, score, [shared.names[i] for i in some])
        torch.testing.assert_close(shared.per_prompt[:, some], expected, atol=1e-5, rtol=1e-5)
    # mean ablation has no corrupted run to ride along: the forwards run apart, and it says so
    model = llama_style()
    mean = ti.circuits.attribute(model, clean, corrupted, METRIC, method="exact", ablation="mean", progress=False)
    assert mean.provenance.settings["senders_read"] == "clean and corrupted forwards apart (ablation='mean')"
