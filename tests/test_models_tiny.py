"""make_tiny_hf_dir writes a loadable, deterministic tiny HF model with a real tokenizer."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from tl_interp.models import make_tiny_hf_dir


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tiny_dir_holds_a_config_weights_and_a_tokenizer(tmp_path: Path, arch: str) -> None:
    path = make_tiny_hf_dir(tmp_path / "tiny", arch)
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in path.iterdir()}


def test_tiny_llama_has_the_requested_shape_and_grouped_query_attention(tmp_path: Path) -> None:
    path = make_tiny_hf_dir(tmp_path, "llama", n_layers=3, d_model=32, n_heads=4, n_key_value_heads=2)
    config = AutoConfig.from_pretrained(path)
    assert config.architectures == ["LlamaForCausalLM"]
    assert (config.num_hidden_layers, config.hidden_size) == (3, 32)
    assert (config.num_attention_heads, config.num_key_value_heads) == (4, 2)


def test_same_seed_gives_identical_weights_and_another_seed_does_not(tmp_path: Path) -> None:
    a = load_file(make_tiny_hf_dir(tmp_path / "a", "gpt2", seed=3) / "model.safetensors")
    b = load_file(make_tiny_hf_dir(tmp_path / "b", "gpt2", seed=3) / "model.safetensors")
    c = load_file(make_tiny_hf_dir(tmp_path / "c", "gpt2", seed=4) / "model.safetensors")
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_making_a_tiny_dir_leaves_the_global_rng_alone(tmp_path: Path) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    make_tiny_hf_dir(tmp_path, "llama")
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_tokenizer_is_a_real_fast_tokenizer_that_round_trips(tmp_path: Path, arch: str) -> None:
    tok = AutoTokenizer.from_pretrained(make_tiny_hf_dir(tmp_path, arch))
    assert isinstance(tok, PreTrainedTokenizerBase) and tok.is_fast
    text = "When Mary and John went to the store , John gave a drink to Mary"
    ids = tok(text)["input_ids"]
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == ("<bos>", "<eos>", "<pad>", "<unk>")
    assert tok("zebra")["input_ids"] == [tok.unk_token_id]


def test_random_weights_give_non_trivial_predictions(tmp_path: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(make_tiny_hf_dir(tmp_path, "llama")).eval()
    with torch.no_grad():
        logits = model(torch.tensor([[1, 4, 96, 71, 13]])).logits
    # HF's default init (std 0.02) would make every next-token distribution nearly uniform.
    assert logits.std().item() > 0.5


def test_unknown_arch_is_rejected(tmp_path: Path) -> None:
    # ValueError from make_tiny_hf_dir itself, or TypeError from the jaxtyping/beartype
    # import hook the test suite runs under (it checks the Literal first).
    with pytest.raises((ValueError, TypeError), match="bert"):
        make_tiny_hf_dir(tmp_path, "bert")  # type: ignore[arg-type]
