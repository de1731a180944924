"""Local Hugging Face directories load as HookedTransformer or TransformerBridge, offline,
with the same predictions as Hugging Face's own forward pass."""

import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from transformer_lens.model_bridge import TransformerBridge
from transformers import AutoModelForCausalLM, AutoTokenizer

from tests.conftest import hooked_class
from tl_interp.compat.blocks import architecture
from tl_interp.errors import ModelLoadError
from tl_interp.models import adapt, load, make_tiny_hf_dir

PROMPTS = ["When Mary and John went to the store , John gave a drink to", "the cat sat on the mat", "the dog"]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_hf")
    return {arch: make_tiny_hf_dir(root / arch, arch, seed=1) for arch in ("llama", "gpt2")}


def _write_dir(path: Path, config: Any, tokenizer_dir: Path) -> Path:
    """A random HF model of any architecture, with the tiny tokenizer copied in."""
    from transformers import AutoModelForCausalLM as Auto

    torch.manual_seed(0)
    model = Auto.from_config(config)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=gen) * 0.2 + (1.0 if param.ndim == 1 else 0.0))
    model.save_pretrained(path)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, path / name)
    return path


def _hf_logits(path: Path, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    hf = AutoModelForCausalLM.from_pretrained(path, attn_implementation="eager").eval()
    with torch.no_grad():
        return hf(tokens, attention_mask=mask).logits


def _tokens(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    tok = AutoTokenizer.from_pretrained(path)
    enc = tok(PROMPTS, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@pytest.mark.hooked
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_hooked_backend_log_probs_match_hugging_face(tiny_dirs: dict[str, Path], arch: str) -> None:
    tokens, mask = _tokens(tiny_dirs[arch])
    model = load(tiny_dirs[arch], backend="hooked", device="cpu")
    assert isinstance(model, hooked_class())
    with torch.no_grad():
        ours = model(tokens, attention_mask=mask).log_softmax(-1)
    expected = _hf_logits(tiny_dirs[arch], tokens, mask).log_softmax(-1)
    real = mask.bool()
    torch.testing.assert_close(ours[real], expected[real], atol=2e-5, rtol=0)


@pytest.mark.hooked
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_unprocessed_hooked_backend_logits_match_hugging_face(tiny_dirs: dict[str, Path], arch: str) -> None:
    tokens, mask = _tokens(tiny_dirs[arch])
    model = load(tiny_dirs[arch], backend="hooked", processed=False, device="cpu")
    assert model.cfg.normalization_type in ("LN", "RMS")  # nothing folded
    with torch.no_grad():
        ours = model(tokens, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(ours[real], _hf_logits(tiny_dirs[arch], tokens, mask)[real], atol=2e-5, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_bridge_backend_logits_equal_hugging_face(tiny_dirs: dict[str, Path], arch: str) -> None:
    tokens, mask = _tokens(tiny_dirs[arch])
    model = load(tiny_dirs[arch], backend="bridge", device="cpu")
    assert isinstance(model, TransformerBridge) and model.compatibility_mode
    with torch.no_grad():
        ours = model(tokens, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(ours[real], _hf_logits(tiny_dirs[arch], tokens, mask)[real], atol=1e-5, rtol=0)


def test_processed_bridge_matches_hugging_face_log_probs(tiny_dirs: dict[str, Path]) -> None:
    tokens, mask = _tokens(tiny_dirs["llama"])
    model = load(tiny_dirs["llama"], backend="bridge", processed=True, device="cpu")
    with torch.no_grad():
        ours = model(tokens, attention_mask=mask).log_softmax(-1)
    expected = _hf_logits(tiny_dirs["llama"], tokens, mask).log_softmax(-1)
    real = mask.bool()
    torch.testing.assert_close(ours[real], expected[real], atol=2e-5, rtol=0)


@pytest.mark.parametrize("backend", [pytest.param("hooked", marks=pytest.mark.hooked), "bridge"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tokenizer_round_trips_through_the_loaded_model(tiny_dirs: dict[str, Path], arch: str, backend: str) -> None:
    model = load(tiny_dirs[arch], backend=backend, device="cpu")
    text = PROMPTS[0]
    tokens = model.to_tokens(text, prepend_bos=False)
    assert tokens[0].tolist() == AutoTokenizer.from_pretrained(tiny_dirs[arch])(text)["input_ids"]
    assert model.to_string(tokens[0]) == text
    assert model.to_tokens(text, prepend_bos=True)[0, 0].item() == model.tokenizer.bos_token_id


@pytest.mark.parametrize("backend", [pytest.param("hooked", marks=pytest.mark.hooked), "bridge"])
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("side", ["left", "right"])
def test_padded_batch_with_attention_mask_equals_unbatched(
    tiny_dirs: dict[str, Path], arch: str, backend: str, side: str
) -> None:
    model = load(tiny_dirs[arch], backend=backend, device="cpu")
    ad = adapt(model)
    batch = ad.tokenize(PROMPTS, padding_side=side)
    with torch.no_grad():
        batched = model(batch.tokens, attention_mask=batch.attention_mask)
        for i, prompt in enumerate(PROMPTS):
            single = ad.tokenize(prompt)
            alone = model(single.tokens)[0]
            real = batch.attention_mask[i].bool()
            torch.testing.assert_close(batched[i][real], alone, atol=1e-5, rtol=0)


def test_auto_backend_prefers_hooked_transformer(tiny_dirs: dict[str, Path]) -> None:
    assert isinstance(load(tiny_dirs["llama"], device="cpu"), hooked_class())


def test_grouped_query_attention_is_kept(tiny_dirs: dict[str, Path]) -> None:
    model = load(tiny_dirs["llama"], device="cpu")
    assert (model.cfg.n_heads, model.cfg.n_key_value_heads) == (4, 2)
    assert architecture(model) == "LlamaForCausalLM"  # a bridge (TL 4) keeps it in cfg.architecture


@pytest.mark.parametrize("arch", ["qwen2", "mistral"])
def test_qwen2_and_mistral_load_as_hooked_transformer_with_hf_log_probs(
    tiny_dirs: dict[str, Path], tmp_path: Path, arch: str
) -> None:
    from transformers import MistralConfig, Qwen2Config

    common = dict(vocab_size=307, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    config = (Qwen2Config(**common) if arch == "qwen2" else MistralConfig(sliding_window=None, **common))
    path = _write_dir(tmp_path / arch, config, tiny_dirs["llama"])
    tokens, mask = _tokens(path)
    model = load(path, device="cpu")
    assert isinstance(model, hooked_class())
    with torch.no_grad():
        ours = model(tokens, attention_mask=mask).log_softmax(-1)
    real = mask.bool()
    torch.testing.assert_close(ours[real], _hf_logits(path, tokens, mask).log_softmax(-1)[real], atol=2e-5, rtol=0)


@pytest.fixture(scope="module")
def neox_dir(tiny_dirs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import GPTNeoXConfig

    config = GPTNeoXConfig(vocab_size=307, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, max_position_embeddings=64, rotary_pct=0.5)
    return _write_dir(tmp_path_factory.mktemp("neox"), config, tiny_dirs["gpt2"])


def test_architecture_without_a_hooked_converter_falls_back_to_the_bridge(neox_dir: Path) -> None:
    model = load(neox_dir, device="cpu")
    assert isinstance(model, TransformerBridge)
    tokens, mask = _tokens(neox_dir)
    with torch.no_grad():
        ours = model(tokens, attention_mask=mask)
    real = mask.bool()
    torch.testing.assert_close(ours[real], _hf_logits(neox_dir, tokens, mask)[real], atol=1e-5, rtol=0)
    assert "blocks.1.attn.hook_z" in model.hook_dict


@pytest.mark.hooked  # on TransformerLens 4 every backend='hooked' load is refused (no HookedTransformer)
def test_forcing_hooked_on_an_unsupported_architecture_says_to_use_the_bridge(neox_dir: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"GPTNeoXForCausalLM.*backend='bridge'"):
        load(neox_dir, backend="hooked", device="cpu")


def test_directory_without_config_json_is_explained(tmp_path: Path) -> None:
    (tmp_path / "weights.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match="has no config.json.*save_pretrained"):
        load(tmp_path, device="cpu")


def test_loading_never_reaches_the_hub(tiny_dirs: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    seen: list[bool] = []
    real_from_pretrained = AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(hub_constants.is_offline_mode())
        return real_from_pretrained(cls, *args, **kwargs)

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    load(tiny_dirs["gpt2"], device="cpu")  # hooked on TransformerLens 3.x, a bridge on 4.x
    assert seen and all(seen)
    assert hub_constants.HF_HUB_OFFLINE is False  # restored afterwards
