"""Exact patching sweeps equal TransformerLens's get_act_patch_* results, batched and padded."""

from typing import Any

import pytest
import torch
from torch.testing import assert_close
from transformer_lens import patching as tlp

import tl_interp as ti
from tests.conftest import _cfg, attn_only, gpt2_style, llama_style
from tl_interp import InputError, OptionError, ShapeError

ARCHS = {"gpt2": gpt2_style, "llama_gqa": llama_style, "attn_only": attn_only}
# (site, over) -> the TransformerLens function computing the same sweep
TL_SWEEPS = {
    ("resid_pre", None): tlp.get_act_patch_resid_pre,
    ("resid_mid", None): tlp.get_act_patch_resid_mid,
    ("attn_out", None): tlp.get_act_patch_attn_out,
    ("mlp_out", None): tlp.get_act_patch_mlp_out,
    ("z", None): tlp.get_act_patch_attn_head_out_all_pos,
    ("z", ("pos", "head_index")): tlp.get_act_patch_attn_head_out_by_pos,
    ("q", None): tlp.get_act_patch_attn_head_q_all_pos,
    ("k", None): tlp.get_act_patch_attn_head_k_all_pos,
    ("v", ("pos", "head_index")): tlp.get_act_patch_attn_head_v_by_pos,
    ("pattern", None): tlp.get_act_patch_attn_head_pattern_all_pos,
    ("pattern", ("head_index", "dest_pos")): tlp.get_act_patch_attn_head_pattern_by_pos,
}
_MODELS: dict[str, Any] = {}


def model_for(arch: str) -> Any:
    if arch not in _MODELS:
        _MODELS[arch] = ARCHS[arch]()
    return _MODELS[arch]


def pair(batch: int = 3, seq: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, Any]:
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, 61, (batch, seq), generator=g)
    corrupted = clean.clone()
    corrupted[:, 2] = torch.randint(1, 61, (batch,), generator=g)
    metric = ti.metrics.logit_diff(torch.randint(1, 61, (batch,), generator=g), torch.randint(1, 61, (batch,), generator=g),
                                   positions=-1)  # unpadded
    return clean, corrupted, metric


@pytest.mark.parametrize("arch", list(ARCHS))
@pytest.mark.parametrize("site, over", list(TL_SWEEPS))
def test_sweep_equals_transformer_lens(arch: str, site: str, over: Any) -> None:
    model = model_for(arch)
    if arch == "attn_only" and site in ("mlp_out", "resid_mid"):
        pytest.skip("an attention-only model has no MLP and no resid_mid")
    clean, corrupted, metric = pair()
    _, clean_cache = model.run_with_cache(clean)
    expected = TL_SWEEPS[(site, over)](model, corrupted, clean_cache, metric)
    ours = ti.patching.sweep(model, clean, corrupted, metric, site=site, over=over, progress=False)
    engine = ours.provenance.settings["engine"]  # the fastest paths are the ones checked here
    assert engine["prefix_kv"] == engine["split_final"] == engine["read_only"] == engine["mid_stack"] == "on"
    assert ours.provenance.settings["final_block_split"] > 0
    assert ours.values.shape == expected.shape
    assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "llama_gqa"])
def test_unbatched_sweep_equals_transformer_lens_and_noising_swaps_roles(arch: str) -> None:
    model = model_for(arch)
    clean, corrupted, metric = pair(batch=1)
    _, corrupted_cache = model.run_with_cache(corrupted)
    expected = tlp.get_act_patch_resid_pre(model, clean, corrupted_cache, metric)
    ours = ti.patching.sweep(model, clean, corrupted, metric, direction="noise", progress=False)
    assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)


def test_a_plain_metric_function_gives_transformer_lens_values() -> None:
    model = model_for("gpt2")
    clean, corrupted, metric = pair()

    def as_function(logits: torch.Tensor) -> torch.Tensor:
        return metric(logits)

    _, clean_cache = model.run_with_cache(clean)
    expected = tlp.get_act_patch_attn_head_out_all_pos(model, corrupted, clean_cache, as_function)
    b = ti.patching.sweep(model, clean, corrupted, as_function, site="z", progress=False)
    assert_close(b.values, expected.float(), rtol=0, atol=1e-4)
    assert b.metric == "as_function"


def test_small_memory_budget_still_gives_transformer_lens_values() -> None:
    model = model_for("llama_gqa")
    clean, corrupted, metric = pair()
    big = ti.patching.sweep(model, clean, corrupted, metric, progress=False)
    small = ti.patching.sweep(model, clean, corrupted, metric, memory_mb=0.01, progress=False)
    computed = small.values.numel() - small.provenance.settings["cells_skipped"]
    assert small.provenance.settings["passes"] == computed > big.provenance.settings["passes"]  # one cell a pass
    _, clean_cache = model.run_with_cache(clean)
    expected = tlp.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
    assert_close(small.values, expected.float(), rtol=0, atol=1e-4)


def test_patching_clean_into_clean_gives_the_clean_metric_everywhere() -> None:
    model = model_for("gpt2")
    clean, _, metric = pair()
    res = ti.patching.sweep(model, clean, clean, metric, site="z", over=("pos", "head_index"), progress=False)
    with torch.no_grad():
        clean_metric = metric(model(clean))  # reference: one plain forward pass, no hooks
    assert_close(res.source, clean_metric, rtol=0, atol=1e-5)
    assert_close(res.values, clean_metric.expand_as(res.values), rtol=0, atol=1e-5)
    with pytest.raises(ti.errors.UnsupportedError, match="same metric value"):
        res.normalized  # no gap between the runs to normalise by


def test_padded_batch_equals_prompt_by_prompt_sweeps() -> None:
    model = model_for("llama_gqa")
    lengths = [6, 4, 5]
    g = torch.Generator().manual_seed(3)
    rows = [torch.randint(1, 61, (n,), generator=g) for n in lengths]
    clean = torch.zeros(3, 6, dtype=torch.long)
    mask = torch.zeros(3, 6, dtype=torch.long)
    for i, r in enumerate(rows):
        clean[i, : len(r)], mask[i, : len(r)] = r, 1
    corrupted = clean.clone()
    corrupted[:, 1] = torch.randint(1, 61, (3,), generator=g)
    last = mask.sum(1) - 1
    good, bad = torch.randint(1, 61, (3,), generator=g), torch.randint(1, 61, (3,), generator=g)
    metric = ti.metrics.logit_diff(good, bad, positions=last)
    batched = ti.patching.sweep(model, clean, corrupted, metric, site="z", attention_mask=mask, progress=False)
    by_pos = ti.patching.sweep(model, clean, corrupted, metric, attention_mask=mask, progress=False)
    singles, singles_pos = [], []
    for i, n in enumerate(lengths):
        m = ti.metrics.logit_diff(good[i:i + 1], bad[i:i + 1])
        singles.append(ti.patching.sweep(model, clean[i:i + 1, :n], corrupted[i:i + 1, :n], m, site="z", progress=False).values)
        singles_pos.append(ti.patching.sweep(model, clean[i:i + 1, :n], corrupted[i:i + 1, :n], m, progress=False).values[:, :4])
    assert_close(batched.values, torch.stack(singles).mean(0), rtol=1e-4, atol=1e-4)
    assert_close(by_pos.values[:, :4], torch.stack(singles_pos).mean(0), rtol=1e-4, atol=1e-4)


def test_bridge_takes_the_exact_full_forward_path(tmp_path: Any) -> None:
    from tests.conftest import bridge_llama

    bridge = bridge_llama(str(tmp_path))
    clean = torch.randint(4, 100, (2, 5), generator=torch.Generator().manual_seed(0))
    corrupted = clean.clone()
    corrupted[:, 1] = torch.tensor([7, 9])
    metric = ti.metrics.logit_diff(torch.tensor([10, 11]), torch.tensor([12, 13]), positions=-1)
    _, clean_cache = bridge.run_with_cache(clean)
    expected = tlp.get_act_patch_attn_head_out_all_pos(bridge, corrupted, clean_cache, metric)
    ours = ti.patching.sweep(bridge, clean, corrupted, metric, site="z", progress=False)
    assert ours.provenance.settings["engine"]["mid_stack"].startswith("off: TransformerBridge")
    assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)


# -- the fast paths: taken where they are exact, and only there ---------------------------

@pytest.mark.parametrize("arch", ["gpt2", "llama_gqa", "attn_only"])
@pytest.mark.parametrize("site, over", [("resid_pre", None), ("z", ("pos", "head_index")), ("attn_out", None)])
def test_every_cell_through_the_engine_equals_transformer_lens(arch: str, site: str, over: Any) -> None:
    # no cell skipped as unchanged: every one runs the prefix-reuse + split-final-block passes
    model = model_for(arch)
    clean, corrupted, metric = pair()
    _, clean_cache = model.run_with_cache(clean)
    expected = TL_SWEEPS[(site, over)](model, corrupted, clean_cache, metric)
    ours = ti.patching.sweep(model, clean, corrupted, metric, site=site, over=over, skip_unchanged=False,
                             progress=False)
    settings = ours.provenance.settings
    assert settings["engine"]["prefix_kv"] == "on" and settings["final_block_split"] > 0
    assert settings["cells_skipped"] == 0
    assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)


def test_cells_that_patch_the_values_already_there_skip_their_forward_pass() -> None:
    model = model_for("gpt2")
    clean, corrupted, metric = pair()  # the runs differ at position 2 of 6 only
    _, clean_cache = model.run_with_cache(clean)
    expected = tlp.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
    ours = ti.patching.sweep(model, clean, corrupted, metric, progress=False)
    # resid_pre entering layer 0 differs at position 2 only; entering layer 1 at positions 2..5
    assert ours.provenance.settings["cells_skipped"] == 5 + 2
    assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)
    assert_close(ours.values[0, [0, 1, 3, 4, 5]], ours.base.expand(5), rtol=0, atol=0)


_LLAMA = dict(act_fn="silu", normalization_type="RMS", positional_embedding_type="rotary", rotary_dim=8,
              gated_mlp=True, final_rms=True, n_key_value_heads=2)
# config -> (prefix reuse expected, final block split expected)
VARIANTS = {
    "qk_norm": (dict(_LLAMA, use_qk_norm=True), True, True),  # cached keys are after the k norm
    "parallel_attn_mlp": (dict(parallel_attn_mlp=True, positional_embedding_type="rotary", rotary_dim=8), True, True),
    "local_attention": (dict(use_local_attn=True, attn_types=["local", "global"], window_size=3), True, True),
    "soft_caps": (dict(_LLAMA, attn_scores_soft_cap=5.0, output_logits_soft_cap=3.0), True, True),
    "split_qkv_input": (dict(use_split_qkv_input=True), True, False),
    "bidirectional": (dict(attention_dir="bidirectional"), False, False),
}


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_model_variants_take_the_fast_paths_only_where_exact(variant: str) -> None:
    from transformer_lens import HookedTransformer

    config, prefix, split = VARIANTS[variant]
    model = HookedTransformer(_cfg(**config)).eval()
    with torch.no_grad():  # norm weights away from 1, so a skipped q/k norm would show
        for name, p in model.named_parameters():
            if name.endswith(".w") or name.endswith("_norm.w"):
                p.uniform_(0.5, 2.0)
    clean, corrupted, metric = pair()
    _, clean_cache = model.run_with_cache(clean)
    for site, over in [("resid_pre", None), ("z", ("pos", "head_index"))]:
        expected = TL_SWEEPS[(site, over)](model, corrupted, clean_cache, metric)
        ours = ti.patching.sweep(model, clean, corrupted, metric, site=site, over=over, progress=False)
        engine = ours.provenance.settings["engine"]
        assert (engine["prefix_kv"] == "on") is prefix, engine
        assert (engine["split_final"] == "on") is split, engine
        assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)


@pytest.mark.parametrize("hooked_block", [0, 1])
def test_a_hook_inside_a_block_keeps_that_block_on_full_positions(hooked_block: int) -> None:
    model = gpt2_style()  # own copy: the hook stays on for TransformerLens's sweep too

    def zero_first_position(act: torch.Tensor, hook: Any) -> torch.Tensor:
        act[:, 0] = 0.0  # position-dependent: wrong on a slice of positions
        return act

    model.add_hook(f"blocks.{hooked_block}.hook_attn_out", zero_first_position, is_permanent=True)
    try:
        clean, corrupted, metric = pair()
        _, clean_cache = model.run_with_cache(clean)
        expected = tlp.get_act_patch_resid_pre(model, corrupted, clean_cache, metric)
        ours = ti.patching.sweep(model, clean, corrupted, metric, progress=False)
    finally:
        model.reset_hooks(including_permanent=True)
    engine = ours.provenance.settings["engine"]
    assert engine["split_final"] == ("on" if hooked_block == 0 else "off: a hook is attached inside the final block")
    assert_close(ours.values, expected.float(), rtol=0, atol=1e-4)


# -- results ----------------------------------------------------------------------------

def test_result_labels_frame_figure_and_round_trip(tmp_path: Any) -> None:
    model = model_for("gpt2")
    clean, corrupted, metric = pair()
    res = ti.patching.sweep(model, clean, corrupted, metric, site="z", over=("pos", "head_index"), progress=False)
    assert res.axes == ("layer", "pos", "head_index") and res.labels["head_index"][0] == "H0"
    frame = res.to_frame()
    assert len(frame) == res.values.numel()
    assert {"layer", "pos", "head_index", "value", "layer_label"} <= set(frame.columns)
    assert_close(res.normalized, (res.values - res.base) / (res.source - res.base))
    assert res.figure(which="normalized").data[0].type == "heatmap"
    loaded = ti.results.Result.load(res.save(tmp_path / "sweep.safetensors"))
    assert type(loaded) is type(res) and torch.equal(loaded.values, res.values)
    assert loaded.labels == res.labels and loaded.provenance == res.provenance
    assert torch.equal(loaded.base, res.base)


# -- bad input fails before any forward pass ----------------------------------------------

def _counting(model: Any) -> list[int]:
    calls: list[int] = []
    model.hook_dict["hook_embed"].add_hook(lambda act, hook: calls.append(1))
    return calls


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(corrupted=torch.zeros(3, 5, dtype=torch.long)), ShapeError,
     r"clean and corrupted inputs must have the same shape \(batch, pos\)"),
    (dict(metric=lambda logits: logits[:, -1, 0]), InputError, r"the metric must return a scalar \(0-dim tensor\)"),
    (dict(site="resid_pree"), OptionError, r"sweeps cover the site kinds resid_pre, resid_mid"),
    (dict(site="z", over=("pos",)), OptionError, r"a z sweep goes over \('head_index',\), \('pos', 'head_index'\)"),
    (dict(metric=ti.metrics.logit_diff(torch.tensor([1, 2]), 3)), InputError, r"2 answers for a batch of 3 prompts"),
    (dict(direction="sideways"), OptionError, r"direction must be one of 'denoise', 'noise', not 'sideways'"),
    (dict(layers=[7]), ti.SelectionError, r"layers \[7\] are out of range; the model has layers 0..1"),
    (dict(clean=torch.full((3, 6), 99)), InputError, r"token id 99 at row 0, position 0 is outside the vocabulary"),
    (dict(clean=torch.rand(3, 6)), InputError, r"token ids must be an integer tensor"),
])
def test_bad_input_fails_before_any_forward(kwargs: dict, error: type, message: str) -> None:
    model = gpt2_style()
    clean, corrupted, metric = pair()
    args = dict(clean=clean, corrupted=corrupted, metric=metric) | kwargs
    calls = _counting(model)
    with pytest.raises(error, match=message):
        ti.patching.sweep(model, args.pop("clean"), args.pop("corrupted"), args.pop("metric"), progress=False, **args)
    assert calls == []
