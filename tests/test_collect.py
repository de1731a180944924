"""ti.collect reads the states an unbatched, unpadded forward pass sees, and refuses padding."""

import functools

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.conftest import ToyMLP, gpt2_style, llama_style
from tl_interp import site
from tl_interp.errors import HookNameError, OptionError, SelectionError, UnsupportedError
from tl_interp.positions import From, first

LENGTHS = [5, 3, 6, 2]


@functools.cache
def built(family: str) -> torch.nn.Module:
    """One shared model per family, built on first use (on TransformerLens 4, which has no
    HookedTransformer, the tests that use one skip; the rest of the module runs)."""
    return {"gpt2": gpt2_style, "llama_gqa": llama_style}[family]()


def prompts() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(1, 61, (n,), generator=g) for n in LENGTHS]
    for row, at in zip(rows, (3, 1, 0, 0)):  # token 7 occurs in every row, at different places
        row[at] = 7
    return rows


def padded(rows: list[torch.Tensor], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if side == "left" else slice(0, len(r))
        tokens[i, span], mask[i, span] = r, 1
    return tokens, mask


def reference(model, rows, name) -> list[torch.Tensor]:
    """TransformerLens's own cache of each prompt run alone: (len_i, ...) per prompt."""
    return [model.run_with_cache(r[None], names_filter=name)[1][name][0] for r in rows]


@pytest.fixture(params=["gpt2", "llama_gqa"])
def model(request):
    return built(request.param)


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", ["blocks.1.hook_resid_post", "blocks.1.attn.hook_z"])
def test_last_mean_and_all_equal_each_prompt_run_alone(model, side, name) -> None:
    rows = prompts()
    tokens, mask = padded(rows, side)
    ref = reference(model, rows, name)
    kw = dict(attention_mask=mask, memory_mb=1e-6, progress=False)
    last = ti.collect(model, tokens, name, **kw)[name]
    assert_close(last, torch.stack([r[-1] for r in ref]), atol=1e-5, rtol=1e-4)
    mean = ti.collect(model, tokens, name, reduce="mean", positions="all", **kw)[name]
    assert_close(mean, torch.stack([r.mean(0) for r in ref]), atol=1e-5, rtol=1e-4)
    states = ti.collect(model, tokens, name, positions="all", **kw)
    for got, want in zip(states.ragged(name), ref):
        assert_close(got, want, atol=1e-5, rtol=1e-4)
    assert torch.equal(states.read_mask, mask.bool())
    assert states[name].shape[:2] == tokens.shape
    assert bool((states[name][~states.read_mask] == 0).all())


@pytest.mark.parametrize("side", ["left", "right"])
def test_finders_from_and_per_row_positions_follow_each_row(model, side) -> None:
    rows, name = prompts(), "blocks.0.hook_resid_pre"
    tokens, mask = padded(rows, side)
    ref = reference(model, rows, name)
    kw = dict(attention_mask=mask, memory_mb=1e-6, progress=False)
    at = [int((r == 7).nonzero()[0]) for r in rows]
    found = ti.collect(model, tokens, name, positions=first(7), **kw)[name]
    assert_close(found, torch.stack([r[a] for r, a in zip(ref, at)]), atol=1e-5, rtol=1e-4)
    before = ti.collect(model, tokens, name, positions=first(7, offset=1), **kw)[name]
    assert_close(before, torch.stack([r[a + 1] for r, a in zip(ref, at)]), atol=1e-5, rtol=1e-4)
    skip = ti.collect(model, tokens, name, positions=From(1), reduce="mean", **kw)[name]
    assert_close(skip, torch.stack([r[1:].mean(0) for r in ref]), atol=1e-5, rtol=1e-4)
    offset = 0 if side == "right" else tokens.shape[1] - torch.tensor(LENGTHS)
    per_row = ti.collect(model, tokens, name, positions=offset + 1, **kw)[name]
    assert_close(per_row, torch.stack([r[1] for r in ref]), atol=1e-5, rtol=1e-4)


def test_fixed_positions_keep_their_axis_and_stack_follows_where_order() -> None:
    model = built("gpt2")
    tokens = torch.randint(1, 61, (5, 6), generator=torch.Generator().manual_seed(0))
    where = ["blocks.1.hook_resid_pre", "blocks.0.hook_resid_pre"]
    states = ti.collect(model, tokens, where, positions=[0, -1], memory_mb=1e-6, progress=False)
    _, cache = model.run_with_cache(tokens)
    assert_close(states.stack(), torch.stack([cache[n][:, [0, 5]] for n in where]))
    mean = ti.collect(model, tokens, where, positions=slice(1, 3), reduce="mean", progress=False)
    assert_close(mean["blocks.0.hook_resid_pre"], cache["blocks.0.hook_resid_pre"][:, 1:3].mean(1))


def test_strings_are_tokenised_with_their_mask_and_memory_mb_does_not_matter() -> None:
    from tl_interp.models import load, make_tiny_hf_dir
    import tempfile

    model = load(make_tiny_hf_dir(tempfile.mkdtemp(), "gpt2"), device="cpu")
    texts = ["the cat sat on the mat", "a dog", "birds fly south in winter"]
    one = ti.collect(model, texts, "blocks.1.hook_resid_post", positions="all", reduce="mean",
                     memory_mb=1e-6, progress=False)
    three = ti.collect(model, texts, "blocks.1.hook_resid_post", positions="all", reduce="mean",
                       progress=False)  # the default budget holds all three rows in one pass
    assert_close(one["blocks.1.hook_resid_post"], three["blocks.1.hook_resid_post"], atol=1e-5, rtol=1e-4)
    assert three.batch.str_tokens[1][:2] == one.batch.str_tokens[1][:2]


def test_the_forward_pass_stops_after_the_deepest_block_read() -> None:
    model = built("gpt2")

    def explode(act, hook):
        raise RuntimeError("block 1 ran")

    model.hook_dict["blocks.1.hook_resid_pre"].add_hook(explode)
    try:
        states = ti.collect(model, torch.tensor([[1, 2, 3]]), "blocks.0.hook_resid_mid", progress=False)
        with pytest.raises(RuntimeError, match="block 1 ran"):
            ti.collect(model, torch.tensor([[1, 2, 3]]), "ln_final.hook_normalized", progress=False)
    finally:
        model.reset_hooks()
    assert states["blocks.0.hook_resid_mid"].shape == (1, 32)


def test_padding_is_never_read() -> None:
    model = built("gpt2")
    tokens, mask = padded(prompts(), "right")
    with pytest.raises(SelectionError, match=r"positions=-1 lands on padding in rows \[0, 1, 3\].*positions='last'"):
        ti.collect(model, tokens, "blocks.0.hook_resid_pre", attention_mask=mask, positions=-1, progress=False)
    with pytest.raises(SelectionError, match=r"lands on padding in rows \[1, 3\]"):
        ti.collect(model, tokens, "blocks.0.hook_resid_pre", attention_mask=mask, positions=[0, 4], progress=False)
    with pytest.raises(SelectionError, match="AND the mask with the attention mask"):
        ti.collect(model, tokens, "blocks.0.hook_resid_pre", attention_mask=mask,
                   positions=torch.ones_like(mask).bool(), progress=False)
    with pytest.raises(SelectionError, match=r"rows \[3\], which have fewer than 3 real tokens"):
        ti.collect(model, tokens, "blocks.0.hook_resid_pre", attention_mask=mask, positions=From(2), progress=False)


def test_bad_requests_fail_before_any_forward_pass() -> None:
    model = built("gpt2")
    tokens, mask = padded(prompts(), "right")
    kw = dict(attention_mask=mask, progress=False)
    with pytest.raises(SelectionError, match=r"first\(0\): rows \[0, 1, 2, 3\] do not contain the token 0"):
        ti.collect(model, tokens, "blocks.0.hook_resid_pre", positions=first(0), **kw)
    with pytest.raises(HookNameError, match="did you mean 'blocks.0.hook_resid_pre'"):
        ti.collect(model, tokens, "blocks.0.hook_resid_pr", **kw)
    with pytest.raises(OptionError, match="reduce must be one of 'mean', not 'max'"):
        ti.collect(model, tokens, "blocks.0.hook_resid_pre", reduce="max", **kw)
    with pytest.raises(OptionError, match="positions=None would read padding"):
        ti.collect(model, tokens, "blocks.0.hook_resid_pre", positions=None, **kw)
    with pytest.raises(SelectionError, match=r"integer with shape \(4,\)"):
        ti.collect(model, tokens, "blocks.0.hook_resid_pre", positions=torch.tensor([0, 1]), **kw)
    with pytest.raises(OptionError, match="index the tensor directly"):
        ti.collect(model, tokens, "blocks.0.hook_resid_pre", **kw).ragged("blocks.0.hook_resid_pre")


def test_custom_modules_are_read_per_input_row() -> None:
    toy = ToyMLP()
    pairs = torch.randint(0, 12, (10, 2), generator=torch.Generator().manual_seed(0))
    states = ti.collect(toy, pairs, ["hook_hidden", "hook_pre"], positions=None, memory_mb=1e-6, progress=False)
    _, cache = toy.run_with_cache(pairs)
    assert_close(states["hook_hidden"], cache["hook_hidden"])
    per_row = 4 * (cache["hook_hidden"][0].numel() + cache["hook_pre"][0].numel())  # bytes of one row's reads
    three = ti.collect(toy, pairs, ["hook_hidden", "hook_pre"], positions=None, memory_mb=3.5 * per_row / 2**20,
                       progress=False)  # one row, then passes of three rows (the last of them holds two)
    assert_close(three["hook_pre"], cache["hook_pre"])
    assert states.stack().shape == (2, 10, 16)
    with pytest.raises(UnsupportedError, match="pass positions=None"):
        ti.collect(toy, pairs, "hook_hidden", progress=False)


def test_every_transformer_family_reads_the_unpadded_states(tcase) -> None:
    rows = [tcase.inputs[0, :5], tcase.inputs[1, :3], tcase.inputs[2]]
    tokens, mask = padded(rows, "right")
    ref = reference(tcase.model, rows, tcase.resid)
    states = ti.collect(tcase.model, tokens, tcase.resid, attention_mask=mask, positions="all", reduce="mean",
                        memory_mb=1e-6, progress=False)
    assert_close(states[tcase.resid], torch.stack([r.mean(0) for r in ref]), atol=1e-5, rtol=1e-4)
