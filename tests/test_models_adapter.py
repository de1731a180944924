"""adapt(model) answers sizes, hook names and padding-aware tokenisation for every family."""

import copy
import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformer_lens import HookedRootModule
from transformer_lens.hook_points import HookPoint
from transformers import AutoTokenizer

from tl_interp.errors import InputError, ModelLoadError, ShapeError
from tl_interp.models import ModelAdapter, Tokenized, adapt, load, make_tiny_hf_dir

PROMPTS = ["When Mary and John went to the store , John gave a drink to", "the cat sat", "the dog"]


class Toy(HookedRootModule):
    """A custom hooked module with no cfg; setup() deliberately not called."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)
        self.hook_in, self.hook_out = HookPoint(), HookPoint()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.hook_out(self.lin(self.hook_in(x)))


@pytest.fixture(scope="module")
def dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("adapter")
    return {arch: make_tiny_hf_dir(root / arch, arch) for arch in ("llama", "gpt2")}


@pytest.fixture(scope="module")
def models(dirs: dict[str, Path]) -> dict[str, Any]:
    from sae_lens import HookedSAETransformer

    hooked = load(dirs["llama"], backend="hooked", device="cpu")
    sae_model = HookedSAETransformer(copy.deepcopy(hooked.cfg), tokenizer=hooked.tokenizer)
    sae_model.load_state_dict(hooked.state_dict())
    return {
        "hooked_transformer": hooked,
        "hooked_sae_transformer": sae_model.eval(),
        "bridge": load(dirs["llama"], backend="bridge", device="cpu"),
        "gpt2": load(dirs["gpt2"], backend="hooked", device="cpu"),
    }


TRANSFORMERS = ["hooked_transformer", "hooked_sae_transformer", "bridge"]


@pytest.mark.parametrize("family", TRANSFORMERS)
def test_family_and_sizes_of_a_grouped_query_llama(models: dict[str, Any], family: str) -> None:
    ad = adapt(models[family])
    assert ad.family == family
    sizes = (ad.n_layers, ad.n_heads, ad.n_key_value_heads, ad.d_model, ad.d_head, ad.d_mlp, ad.d_vocab)
    assert sizes == (2, 4, 2, 64, 16, 128, 307)


def test_without_grouped_query_attention_key_value_heads_equal_heads(models: dict[str, Any]) -> None:
    ad = adapt(models["gpt2"])
    assert ad.n_key_value_heads == ad.n_heads == 4


@pytest.mark.parametrize("family", TRANSFORMERS)
def test_hook_names_are_the_models_hook_points(models: dict[str, Any], family: str) -> None:
    ad = adapt(models[family])
    assert set(ad.hook_names) == set(models[family].hook_dict)
    assert len(ad.hook_names) == len(set(ad.hook_names))
    assert {"blocks.1.hook_resid_pre", "blocks.0.attn.hook_z", "blocks.1.mlp.hook_post"} <= set(ad.hook_names)


def test_model_id_names_the_checkpoint(models: dict[str, Any]) -> None:
    assert adapt(models["hooked_transformer"]).model_id == "llama"
    assert adapt(models["bridge"]).model_id.endswith("llama")


def test_custom_module_gets_set_up_and_reports_unknown_sizes_as_none() -> None:
    ad = adapt(Toy())
    assert ad.family == "custom"
    assert ad.hook_names == ("hook_in", "hook_out")
    assert (ad.n_layers, ad.n_heads, ad.n_key_value_heads, ad.d_model, ad.d_vocab) == (None,) * 5
    assert ad.model_id == "Toy"


def test_custom_module_without_tokenizer_cannot_tokenize() -> None:
    with pytest.raises(ModelLoadError, match=r"Toy \(custom\) has no tokenizer; set model.tokenizer"):
        adapt(Toy()).tokenize("the cat")


def test_custom_module_with_a_tokenizer_tokenizes_without_bos_by_default(dirs: dict[str, Path]) -> None:
    toy = Toy()
    toy.tokenizer = AutoTokenizer.from_pretrained(dirs["gpt2"])
    ad = adapt(toy)
    assert ad.tokenize("the cat").tokens.tolist() == [toy.tokenizer("the cat")["input_ids"]]
    assert ad.tokenize("the cat", prepend_bos=True).tokens[0, 0].item() == toy.tokenizer.bos_token_id


def test_objects_that_are_not_hooked_models_are_refused() -> None:
    with pytest.raises(ModelLoadError, match="Linear is not a model tl_interp can hook; expected a HookedTransformer"):
        adapt(nn.Linear(2, 2))


def test_adapter_is_frozen(models: dict[str, Any]) -> None:
    ad = adapt(models["hooked_transformer"])
    assert isinstance(ad, ModelAdapter)
    with pytest.raises(dataclasses.FrozenInstanceError):
        ad.n_layers = 3  # type: ignore[misc]


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("family", TRANSFORMERS + ["gpt2"])
def test_batched_tokenisation_equals_per_prompt_on_the_non_pad_part(
    models: dict[str, Any], family: str, side: str
) -> None:
    ad = adapt(models[family])
    batch = ad.tokenize(PROMPTS, padding_side=side)
    assert batch.tokens.shape == batch.attention_mask.shape == (3, batch.tokens.shape[1])
    for i, prompt in enumerate(PROMPTS):
        single = ad.tokenize(prompt)
        real = batch.attention_mask[i].bool()
        assert batch.tokens[i][real].tolist() == single.tokens[0].tolist()
        assert batch.tokens[i, batch.last_index[i]] == single.tokens[0, -1]
        assert [s for s, m in zip(batch.str_tokens[i], real.tolist()) if m] == single.str_tokens[0]
        assert len(batch.str_tokens[i]) == batch.tokens.shape[1]
    if side == "left":
        assert (batch.last_index == batch.tokens.shape[1] - 1).all()
        assert batch.attention_mask[:, -1].all()
    else:
        assert batch.last_index.tolist() == (batch.attention_mask.sum(-1) - 1).tolist()
        assert batch.attention_mask[:, 0].all()


@pytest.mark.parametrize("family", TRANSFORMERS)
def test_single_prompt_tokens_are_the_models_own(models: dict[str, Any], family: str) -> None:
    model = models[family]
    ad = adapt(model)
    for prepend_bos in (None, True, False):
        expected = model.to_tokens(PROMPTS[0], prepend_bos=prepend_bos)
        assert torch.equal(ad.tokenize(PROMPTS[0], prepend_bos=prepend_bos).tokens, expected)
    assert ad.tokenize(PROMPTS[0]).str_tokens[0] == model.to_str_tokens(PROMPTS[0])


def test_prepend_bos_is_honoured(models: dict[str, Any]) -> None:
    ad = adapt(models["hooked_transformer"])
    bos = models["hooked_transformer"].tokenizer.bos_token_id
    with_bos = ad.tokenize(PROMPTS, prepend_bos=True, padding_side="left")
    without = ad.tokenize(PROMPTS, prepend_bos=False, padding_side="left")
    first_real = with_bos.tokens[torch.arange(3), with_bos.attention_mask.argmax(-1)]
    assert (first_real == bos).all()
    assert (without.tokens != bos).all()
    assert (with_bos.attention_mask.sum(-1) == without.attention_mask.sum(-1) + 1).all()


def test_padding_uses_the_pad_token(models: dict[str, Any]) -> None:
    tok = models["hooked_transformer"].tokenizer
    batch = adapt(models["hooked_transformer"]).tokenize(PROMPTS)
    assert (batch.tokens[~batch.attention_mask.bool()] == tok.pad_token_id).all()
    assert batch.str_tokens[2][-1] == tok.pad_token


def test_empty_inputs_are_rejected(models: dict[str, Any]) -> None:
    ad = adapt(models["hooked_transformer"])
    with pytest.raises(ShapeError, match="empty list of prompts"):
        ad.tokenize([])
    with pytest.raises(InputError, match=r"prompt 1 \(''\) has no tokens"):
        ad.tokenize(["the cat", ""], prepend_bos=False)


def test_tokenized_checks_that_its_batch_sizes_agree() -> None:
    with pytest.raises(ShapeError, match=r"ti\.models\.Tokenized: last_index has shape \(3,\), which does not fit"):
        Tokenized(
            tokens=torch.zeros(2, 3, dtype=torch.long),
            attention_mask=torch.ones(2, 3, dtype=torch.long),
            last_index=torch.zeros(3, dtype=torch.long),
            str_tokens=[["a"] * 3] * 2,
        )
