"""The real SmolLM2-135M-Instruct checkpoint: log-prob parity with Hugging Face, and a cache
that makes every load after the first one fast and HF-free.

Slow (two GGUF dequantisations, ~1-2 min on 2 CPU cores): marked ``real_model``, run with
``pytest -m real_model``.
"""

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

pytestmark = pytest.mark.real_model

PROMPTS = [
    "The capital of France is",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "When Mary and John went to the store, John gave a drink to",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n"
    "# The Eiffel Tower, completed in 1889, is a wrought-iron lattice tower in Paris.",
]
# fp32 with eager attention on both sides; observed max |diff| is 4e-5 to 8e-5.
ATOL = 5e-4


@pytest.fixture(scope="module")
def cold(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    """First load into an empty cache: dequantise, convert, process, write the cache."""
    from tl_interp.models import _smollm2

    old = os.environ.get("TL_INTERP_CACHE")
    os.environ["TL_INTERP_CACHE"] = str(tmp_path_factory.mktemp("tl_interp_cache"))
    try:
        model = _smollm2.load(device="cpu")
        yield model, _smollm2.cache_entry()
    finally:
        if old is None:
            os.environ.pop("TL_INTERP_CACHE", None)
        else:
            os.environ["TL_INTERP_CACHE"] = old


@pytest.fixture(scope="module")
def hf() -> tuple[Any, Any]:
    """Hugging Face's own model on the same dequantised weights, eager attention, fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tl_interp.models._smollm2 import gguf_path

    path = gguf_path()
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32, attn_implementation="eager"
    )
    return model.eval(), tok


def test_config_matches_the_checkpoint(cold: tuple[Any, Path], hf: tuple[Any, Any]) -> None:
    model, hf_cfg = cold[0], hf[0].config
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_key_value_heads, cfg.d_head, cfg.d_mlp) == (
        30, 576, 9, 3, 64, 1536,
    )
    assert cfg.d_vocab == hf_cfg.vocab_size == 49152
    assert cfg.rotary_base == hf_cfg.rope_parameters["rope_theta"] == 100000.0
    assert cfg.eps == hf_cfg.rms_norm_eps
    assert (cfg.normalization_type, cfg.act_fn, cfg.gated_mlp, cfg.n_ctx) == ("RMSPre", "silu", True, 2048)
    assert cfg.original_architecture == "LlamaForCausalLM"
    assert cfg.default_prepend_bos is False


@pytest.mark.parametrize("prompt", PROMPTS, ids=["capital", "chat", "ioi", "code"])
def test_log_probs_match_hugging_face(cold: tuple[Any, Path], hf: tuple[Any, Any], prompt: str) -> None:
    model, (hf_model, tok) = cold[0], hf
    tokens = model.to_tokens(prompt)
    assert tokens[0].tolist() == tok(prompt)["input_ids"]  # same tokenisation, no BOS added
    with torch.no_grad():
        ours = model(tokens).log_softmax(-1)
        expected = hf_model(tokens).logits.log_softmax(-1)
    diff = (ours - expected).abs().max().item()
    print(f"SmolLM2 parity {prompt[:24]!r} ({tokens.shape[1]} tokens): max |dlogp| = {diff:.2e}")
    torch.testing.assert_close(ours, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_batch_log_probs_match_hugging_face(
    cold: tuple[Any, Path], hf: tuple[Any, Any], side: str
) -> None:
    from tl_interp.models import adapt

    model, (hf_model, _) = cold[0], hf
    batch = adapt(model).tokenize(PROMPTS[:3], padding_side=side)
    # HF numbers positions 0.. from the first column unless told otherwise; TransformerLens
    # counts them from each row's first real token, which is what an unpadded run sees.
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours = model(batch.tokens, attention_mask=batch.attention_mask).log_softmax(-1)
        expected = hf_model(
            batch.tokens, attention_mask=batch.attention_mask, position_ids=position_ids
        ).logits.log_softmax(-1)
    real = batch.attention_mask.bool()
    diff = (ours[real] - expected[real]).abs().max().item()
    print(f"SmolLM2 parity padded batch ({side}): max |dlogp| = {diff:.2e}")
    torch.testing.assert_close(ours[real], expected[real], atol=ATOL, rtol=0)


def test_greedy_continuation_is_sensible(cold: tuple[Any, Path]) -> None:
    out = cold[0].generate("The capital of France is", max_new_tokens=3, do_sample=False, verbose=False)
    assert "Paris" in out


def test_cache_entry_is_complete(cold: tuple[Any, Path]) -> None:
    entry = cold[1]
    assert (entry / "model.safetensors").is_file() and (entry / "config.json").is_file()
    assert (entry / "tokenizer" / "tokenizer.json").is_file()
    assert not [p for p in entry.parent.iterdir() if ".tmp-" in p.name]  # no leftovers


def test_warm_load_is_identical_and_never_touches_hugging_face_models(
    cold: tuple[Any, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    import transformers

    from tl_interp.models import _smollm2

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a warm load must not build a Hugging Face model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(transformers.LlamaForCausalLM, "from_pretrained", refuse)
    monkeypatch.setenv("TL_INTERP_CACHE", str(cold[1].parent))
    warm = _smollm2.load(device="cpu")  # how long it takes is not a test's business (no clocks)
    tokens = warm.to_tokens(PROMPTS[2])
    with torch.no_grad():
        assert torch.equal(warm(tokens), cold[0](tokens))
