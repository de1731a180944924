"""Tiny random Hugging Face model directories, written offline in well under a second.

``make_tiny_hf_dir`` writes ``config.json``, ``model.safetensors`` and a real
``PreTrainedTokenizerFast`` (a word-level tokenizer built with the ``tokenizers`` library) so
tests can load TransformerBridge and HookedTransformer models from a local directory without
touching the Hugging Face hub. Weights are random but deliberately *not* HF's near-zero
default init: norm gains and biases are perturbed away from 1 and 0 so that TransformerLens's
weight processing (LayerNorm folding, centering) is exercised by any parity check.
"""

import json
import os
from pathlib import Path
from typing import Literal

import torch

from tl_interp._checks import checked
from tl_interp.errors import OptionError

__all__ = ["make_tiny_hf_dir", "TINY_VOCAB"]

_SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")

_WORDS = (
    "the a an and or but of to in on at for with from by as is was are were be been "
    "it he she they we you I his her their its this that these those there here "
    "When Then After Before The A In On "
    "Mary John Alice Bob Tom Anna Paul Sara Kate Mark "
    "went gave took said saw made had got put ran sat went walked told asked liked "
    "store park school house garden office station market beach river "
    "drink book ball key pen cup apple letter gift bag "
    "cat dog bird fish mat hat box tree car door "
    "big small red blue green old new good bad happy "
    "January February March April May June July August September October November December "
    "Monday Tuesday Wednesday Thursday Friday Saturday Sunday "
    "zero one two three four five six seven eight nine ten "
    "yes no not all some many one first last next "
    "Paris London Rome Berlin Madrid France England Italy Germany Spain capital city "
    ", . ! ? : ; ' \" ( ) - = + * /"
).split()


def _vocab() -> dict[str, int]:
    words: list[str] = list(_SPECIALS)
    for w in list(_WORDS) + [str(i) for i in range(100)] + [chr(c) for c in range(97, 123)]:
        if w not in words:
            words.append(w)
    return {w: i for i, w in enumerate(words)}


TINY_VOCAB: dict[str, int] = _vocab()


def _make_tokenizer(path: Path, n_ctx: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab=TINY_VOCAB, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    # WordLevel has no decoder of its own; joining pieces with spaces round-trips
    # whitespace-separated text.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        model_max_length=n_ctx,
        padding_side="right",
    )
    fast.save_pretrained(path)


def _perturb_(model: torch.nn.Module, gen: torch.Generator, d_model: int) -> None:
    """Replace HF's near-zero init with weights that give non-trivial logits."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            if p.ndim == 1 and ("norm" in name or ".ln_" in name or name.endswith("ln_f.weight")):
                if name.endswith("weight"):
                    p.copy_(1.0 + 0.2 * noise)
                else:
                    p.copy_(0.1 * noise)
            elif p.ndim == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / d_model**0.5)


@checked
def make_tiny_hf_dir(
    path: str | os.PathLike[str],
    arch: Literal["llama", "gpt2"],
    *,
    seed: int = 0,
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_key_value_heads: int = 2,
    d_mlp: int = 128,
    n_ctx: int = 128,
    tie_word_embeddings: bool = False,
) -> Path:
    """Write a tiny random Hugging Face causal-LM directory with a real fast tokenizer.

    Args:
        path: Directory to write (created if missing; existing files are overwritten).
        arch: ``"llama"`` (LlamaForCausalLM: RMSNorm, rotary, gated SiLU MLP, GQA) or
            ``"gpt2"`` (GPT2LMHeadModel: LayerNorm, learned positions, GELU MLP).
        seed: Seed for the random weights; the global torch RNG is left untouched.
        n_layers: Number of transformer blocks.
        d_model: Residual-stream width.
        n_heads: Attention heads per layer.
        n_key_value_heads: Key/value heads (llama only; equal to ``n_heads`` disables GQA).
        d_mlp: MLP hidden width (gpt2 uses it as ``n_inner``).
        n_ctx: Maximum context length.
        tie_word_embeddings: Share the embedding and unembedding matrices (llama only;
            gpt2 always ties them, as in the real GPT-2).

    Returns:
        The directory path, loadable with ``transformers.AutoModelForCausalLM.from_pretrained``
        and ``tl_interp.models.load``.

    Example:
        >>> import tempfile
        >>> d = make_tiny_hf_dir(tempfile.mkdtemp(), "llama")
        >>> {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in d.iterdir()}
        True
    """
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    vocab_size = len(TINY_VOCAB)
    special_ids = dict(
        bos_token_id=TINY_VOCAB["<bos>"],
        eos_token_id=TINY_VOCAB["<eos>"],
        pad_token_id=TINY_VOCAB["<pad>"],
    )
    if arch == "llama":
        config = LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=d_model,
            intermediate_size=d_mlp,
            num_hidden_layers=n_layers,
            num_attention_heads=n_heads,
            num_key_value_heads=n_key_value_heads,
            max_position_embeddings=n_ctx,
            rms_norm_eps=1e-5,
            rope_theta=10000.0,
            tie_word_embeddings=tie_word_embeddings,
            **special_ids,
        )
        model_cls = LlamaForCausalLM
    elif arch == "gpt2":
        config = GPT2Config(
            vocab_size=vocab_size,
            n_embd=d_model,
            n_layer=n_layers,
            n_head=n_heads,
            n_inner=d_mlp,
            n_positions=n_ctx,
            **special_ids,
        )
        model_cls = GPT2LMHeadModel
    else:
        raise OptionError(f"make_tiny_hf_dir: unknown arch {arch!r}; use 'llama' or 'gpt2'")

    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config).eval()
    _perturb_(model, gen, d_model)
    model.save_pretrained(out)
    _make_tokenizer(out, n_ctx)
    (out / "tl_interp_tiny.json").write_text(json.dumps({"arch": arch, "seed": seed}))
    return out
