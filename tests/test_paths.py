"""Path patching equals the IOI paper's two-pass recipe, hooked by hand with TransformerLens.

The reference (``two_pass``) never uses tl_interp: pass 1 runs the base prompts with every
head's ``z`` and every MLP's output frozen at the base run except the senders' (from the source
run), and records the receivers' inputs; pass 2 runs the base prompts again with only those
receiver inputs overwritten, everything downstream recomputed.
"""

import pytest
import torch

import tl_interp as ti
from tests.conftest import _cfg, gpt2_style, hooked_model, llama_style, no_hooks_attached
from tl_interp.engine.executors import LocalExecutor
from tl_interp.errors import OptionError, SelectionError, UnsupportedError

FLAGS = ("use_split_qkv_input", "use_hook_mlp_in", "ungroup_grouped_query_attention")


def two_pass(model, base, source, senders, receivers):
    """Logits of the base run with ``senders`` ((layer, head) / ("mlp", layer)) reaching only
    ``receivers`` ((layer, head, "q"|"k"|"v") / ("mlp", layer) / "logits"), by hand."""
    saved = {f: getattr(model.cfg, f) for f in FLAGS}
    model.cfg.use_split_qkv_input = True
    model.cfg.use_hook_mlp_in = not model.cfg.attn_only
    model.cfg.ungroup_grouped_query_attention = model.cfg.n_key_value_heads is not None
    try:
        _, base_cache = model.run_with_cache(base)
        _, source_cache = model.run_with_cache(source)
        heads = {s for s in senders if isinstance(s[0], int)}
        mlps = {s[1] for s in senders if s[0] == "mlp"}

        def freeze_z(z, hook):
            layer = int(hook.name.split(".")[1])
            out = base_cache[hook.name].clone()
            for (sl, sh) in heads:
                if sl == layer:
                    out[:, :, sh] = source_cache[hook.name][:, :, sh]
            return out

        def freeze_mlp(x, hook):
            layer = int(hook.name.split(".")[1])
            return (source_cache if layer in mlps else base_cache)[hook.name]

        def name_of(r):
            if r == "logits":
                return f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
            if r[0] == "mlp":
                return f"blocks.{r[1]}.hook_mlp_in"
            return f"blocks.{r[0]}.hook_{r[2]}_input"

        recorded = {}

        def record(x, hook):
            recorded[hook.name] = x.clone()

        fwd = [(lambda n: n.endswith("attn.hook_z"), freeze_z)]
        if not model.cfg.attn_only:
            fwd.append((lambda n: n.endswith("hook_mlp_out"), freeze_mlp))
        fwd += [(name_of(r), record) for r in receivers]
        model.run_with_hooks(base, fwd_hooks=fwd)

        def overwrite(r):
            def hook(x, hook):
                x = x.clone()
                if r == "logits" or r[0] == "mlp":
                    return recorded[hook.name]
                x[:, :, r[1]] = recorded[hook.name][:, :, r[1]]
                return x
            return hook

        return model.run_with_hooks(base, fwd_hooks=[(name_of(r), overwrite(r)) for r in receivers])
    finally:
        for f, v in saved.items():
            setattr(model.cfg, f, v)


def _check(model, clean, corrupt, metric, senders, receivers, direction="noise", atol=1e-5):
    res = ti.patching.paths(model, clean, corrupt, metric, senders=senders, receivers=receivers,
                            direction=direction, progress=False)
    base, source = (clean, corrupt) if direction == "noise" else (corrupt, clean)
    for i, s in enumerate(senders):
        group = list(s) if isinstance(s, (set, frozenset)) else [s]
        for j, r in enumerate(receivers):
            rs = list(r) if isinstance(r, (set, frozenset)) else [r]
            expected = metric(two_pass(model, base, source, group, rs))
            if torch.isnan(res.values[i, j]):
                continue
            torch.testing.assert_close(res.values[i, j], expected.float(), atol=atol, rtol=0)
    return res


def test_paths_equal_the_two_pass_recipe_on_induction_2l() -> None:
    model = ti.models.load("induction-2l")
    clean = torch.tensor([[0, 5, 6, 7, 8, 0, 5, 6, 7], [0, 9, 3, 4, 2, 0, 9, 3, 4]])
    corrupt = torch.tensor([[0, 5, 6, 7, 8, 0, 11, 6, 7], [0, 9, 3, 4, 2, 0, 12, 3, 4]])
    metric = ti.metrics.logit_diff(torch.tensor([8, 2]), torch.tensor([11, 12]), positions=-1)  # unpadded: read by hand too
    senders = [(0, h) for h in range(model.cfg.n_heads)] + [{(0, 0), (0, 2)}]
    receivers = [(1, h, x) for h in range(model.cfg.n_heads) for x in "qkv"] + ["logits", {(1, 0, "k"), (1, 1, "q")}]
    res = _check(model, clean, corrupt, metric, senders, receivers)
    assert res.values.shape == (4, 11) and torch.isfinite(res.values).all()
    assert res.extras["per_prompt"].shape == (4, 11, 2)
    _check(model, clean, corrupt, metric, senders[:2], receivers[:4], direction="denoise")


def test_paths_equal_the_two_pass_recipe_on_ordinal_4l_with_mlps() -> None:
    model = ti.models.load("ordinal-4l")
    adapter = ti.models.adapt(model)
    clean = adapter.tokenize(["january is followed by", "march is followed by"]).tokens
    corrupt = adapter.tokenize(["june is followed by", "august is followed by"]).tokens
    def metric(logits):  # TransformerLens's plain-function form: february/april against july/september
        return (logits[:, -1, [27, 29]].diagonal() - logits[:, -1, [32, 34]].diagonal()).mean()
    senders = [(0, 1), ("mlp", 0), (1, 3), {(0, 0), ("mlp", 1)}]
    receivers = [(2, 1, "q"), (1, 2, "v"), ("mlp", 1), ("mlp", 2), "logits", {(2, 0, "k"), ("mlp", 3), (3, 1, "v")}]
    res = _check(model, clean, corrupt, metric, senders, receivers)
    assert torch.isnan(res.values[2, 1])  # head L1H3 writes after L1H2's value input reads: no path
    assert not no_switch_left_on(model)


def test_paths_equal_the_two_pass_recipe_on_a_gqa_rotary_rmsnorm_model() -> None:
    model = llama_style()  # 4 heads sharing 2 key-value heads, rotary, RMSNorm, gated MLP
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(1, 61, (3, 7), generator=g)
    corrupt = clean.clone()
    corrupt[:, 2] = (corrupt[:, 2] + 7) % 61
    metric = ti.metrics.logit_diff(3, 4, positions=-1)  # unpadded: read by hand too
    senders = [(0, h) for h in range(4)] + [("mlp", 0)]
    receivers = [(1, h, x) for h in range(4) for x in "kv"] + [(1, 1, "q"), ("mlp", 1), "logits"]
    res = ti.patching.paths(model, clean, corrupt, metric, senders=senders, receivers=receivers, progress=False)
    for i, s in enumerate(senders):
        for j, r in enumerate(receivers):
            expected = metric(two_pass(model, clean, corrupt, [s], [r]))
            torch.testing.assert_close(res.values[i, j], expected, atol=1e-5, rtol=0)
    # heads sharing a key-value head still receive separately: their key inputs give different values
    assert not torch.allclose(res.values[:, 0], res.values[:, 2])
    assert model.cfg.ungroup_grouped_query_attention is False and not no_switch_left_on(model)
    assert "ungrouped" in res.provenance.settings["engine"]["prefix_kv"]  # TL's cache holds key-value heads


def no_switch_left_on(model) -> bool:
    return any(getattr(model.cfg, f) for f in FLAGS)


def test_the_switches_are_restored_and_no_hook_is_left_after_an_error_mid_study() -> None:
    model = gpt2_style()
    tokens = torch.tensor([[1, 2, 3, 4]])

    def metric(logits):
        if model.cfg.use_split_qkv_input:  # fails only inside the study, after the switches went on
            raise RuntimeError("boom")
        return logits[:, -1, 0].mean()

    with pytest.raises(RuntimeError, match="boom"):
        ti.patching.paths(model, tokens, tokens.flip(-1), metric, senders=(0, 1), receivers=(1, 0, "q"),
                          progress=False, fast_paths=False)
    assert not no_switch_left_on(model) and no_hooks_attached(model)


def test_patching_a_run_into_itself_changes_nothing() -> None:
    model = gpt2_style()
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    res = ti.patching.paths(model, tokens, tokens, ti.metrics.logit_diff(1, 2), senders=[(0, 0), ("mlp", 0)],
                            receivers=[(1, 2, "qkv"), "logits"], progress=False)
    torch.testing.assert_close(res.values, res.base.expand(2, 2), atol=1e-6, rtol=0)


def test_the_result_saves_loads_and_renders(tmp_path) -> None:
    model = ti.models.load("induction-2l")
    clean = torch.tensor([[0, 5, 6, 7, 0, 5, 6]])
    corrupt = torch.tensor([[0, 5, 6, 7, 0, 9, 6]])
    res = ti.patching.paths(model, clean, corrupt, ti.metrics.logit_diff(7, 9), senders=[(0, 0), (0, 1)],
                            receivers=[(1, 0, "k"), "logits"], progress=False, executor=LocalExecutor())
    back = ti.results.Result.load(res.save(tmp_path / "p.safetensors"))
    torch.testing.assert_close(back.values, res.values)
    assert back.labels == res.labels and "L0H1" in back._repr_html_()
    assert res.figure(which="normalized").data[0].type == "heatmap"
    page = ti.viz.Report("paths").result(res).write(tmp_path / "r.html")
    assert "L1H0.k" in open(page).read()
    assert res.provenance.settings["engine"]["mid_stack"] == "on"


# -- refusals, before any forward pass -----------------------------------------------------------
def _refuse(model, match, exc, **kw):
    calls = []
    handle = model.blocks[0].hook_resid_pre.register_forward_hook(lambda *a: calls.append(1))
    try:
        with pytest.raises(exc, match=match):
            ti.patching.paths(model, torch.tensor([[1, 2, 3]]), torch.tensor([[1, 4, 3]]), ti.metrics.logit_diff(1, 2),
                              progress=False, **kw)
    finally:
        handle.remove()
    assert not calls and not no_switch_left_on(model)


def test_bad_senders_and_receivers_are_refused_before_any_forward_pass() -> None:
    model = gpt2_style()
    _refuse(model, r"receiver \(1, 2\) is a head; say which of its inputs receives: \(1, 2, 'q'\)", OptionError,
            senders=(0, 1), receivers=(1, 2))
    _refuse(model, r"sender L0H9: head 9 is out of range; layer 0 has heads 0..3", SelectionError,
            senders=(0, 9), receivers="logits")
    _refuse(model, r"receiver MLP5: layer 5 is out of range; the model has layers 0..1", SelectionError,
            senders=(0, 1), receivers=("mlp", 5))
    _refuse(model, r"no sender \(L1H0\) writes before any receiver \(L1H2.q\) reads", OptionError,
            senders=(1, 0), receivers=(1, 2, "q"))
    _refuse(model, r"sender 'head3' is not understood; give a head \(layer, head\) or 'L3H1'", OptionError,
            senders="head3", receivers="logits")
    _refuse(model, r"senders is empty", OptionError, senders=[], receivers="logits")
    _refuse(ti.models.load("induction-2l"), r"attention-only .* it has no MLP", UnsupportedError,
            senders=("mlp", 0), receivers="logits")


def test_head_senders_are_refused_where_a_norm_mixes_the_heads() -> None:
    model = hooked_model(_cfg(normalization_type="RMS", use_normalization_before_and_after=True)).eval()
    _refuse(model, r"head senders on HookedTransformer: each block normalises its attention and MLP outputs",
            UnsupportedError, senders=(0, 1), receivers="logits")


# -- TransformerLens's direct path patching (a frozen, linearised receiver norm) ---------------
@pytest.mark.parametrize("make", [gpt2_style, llama_style], ids=["layernorm", "gqa_rotary_rmsnorm"])
def test_frozen_norm_equals_transformer_lens_direct_path_patching(make) -> None:
    from transformer_lens.tools.analysis.direct_path_patching import get_act_patch_direct_path

    model = make()
    model.process_weights_(fold_ln=True, center_writing_weights=True, center_unembed=True)  # TL's stated setting
    g = torch.Generator().manual_seed(1)
    clean = torch.randint(1, 61, (2, 6), generator=g)
    corrupt = clean.clone()
    corrupt[:, 1] = (corrupt[:, 1] + 5) % 61
    metric = ti.metrics.logit_diff(3, 4, positions=-1)  # unpadded: read by hand too
    _, clean_cache = model.run_with_cache(clean)
    _, corrupt_cache = model.run_with_cache(corrupt)
    n = model.cfg.n_heads
    res = ti.patching.paths(model, clean, corrupt, metric, senders=[(0, h) for h in range(n)],
                            receivers=[(1, h, "q") for h in range(n)], direction="denoise", norm="frozen",
                            progress=False)
    for h in range(n):
        tl = get_act_patch_direct_path(model, corrupt, clean_cache, corrupt_cache, metric, src_layer=0, src_head=h,
                                       component="q", verbose=False)
        torch.testing.assert_close(res.values[h], tl[1].float(), atol=1e-5, rtol=0)
    exact = ti.patching.paths(model, clean, corrupt, metric, senders=[(0, h) for h in range(n)],
                              receivers=[(1, h, "q") for h in range(n)], direction="denoise", progress=False)
    assert not torch.allclose(exact.values, res.values, atol=1e-5)  # recomputing the norm is a different number


def test_frozen_norm_is_refused_for_receivers_it_does_not_cover() -> None:
    _refuse(gpt2_style(), r"norm='frozen' .* patches head inputs only; receivers \['logits'\] are not heads",
            OptionError, senders=(0, 1), receivers="logits", norm="frozen")


def test_a_padded_batch_equals_its_prompts_one_by_one() -> None:
    model = ti.models.load("ordinal-4l")
    clean = ["january is followed by", "the next month after october is"]
    corrupt = ["june is followed by", "the next month after march is"]
    right, wrong = torch.tensor([27, 37]), torch.tensor([32, 29])  # february / november vs july / april
    senders, receivers = [(0, 1), ("mlp", 1), (2, 3)], [(3, 0, "qk"), ("mlp", 2), "logits"]
    both = ti.patching.paths(model, clean, corrupt, ti.metrics.logit_diff(right, wrong), senders=senders,
                             receivers=receivers, progress=False)
    for row in range(2):
        alone = ti.patching.paths(model, clean[row], corrupt[row], ti.metrics.logit_diff(int(right[row]), int(wrong[row])),
                                  senders=senders, receivers=receivers, progress=False)
        torch.testing.assert_close(both.extras["per_prompt"][..., row], alone.values, atol=1e-5, rtol=0,
                                   equal_nan=True)


def test_labels_written_as_strings_mean_the_same_components() -> None:
    model = gpt2_style()
    clean, corrupt = torch.tensor([[1, 2, 3, 4, 5]]), torch.tensor([[1, 7, 3, 4, 5]])
    metric = ti.metrics.logit_diff(1, 2, positions=-1)
    as_tuples = ti.patching.paths(model, clean, corrupt, metric, senders=[(0, 3), ("mlp", 0)],
                                  receivers=[(1, 2, "qv"), ("mlp", 1)], progress=False)
    as_strings = ti.patching.paths(model, clean, corrupt, metric, senders=["L0H3", "MLP0"],
                                   receivers=[{"L1H2.q", "L1H2.v"}, "MLP1"], progress=False)
    torch.testing.assert_close(as_strings.values, as_tuples.values, atol=0, rtol=0)
    assert as_tuples.labels == {"sender": ("L0H3", "MLP0"), "receivers": ("L1H2.q+L1H2.v", "MLP1")}
