"""models.load resolves tl_interp names, zoo names and local directories, never the hub."""

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from transformer_lens.model_bridge import TransformerBridge

import tl_interp.models as models
from tests.conftest import hooked_class
from tl_interp.errors import ModelLoadError


def test_unknown_name_lists_the_known_names_and_mentions_directories() -> None:
    with pytest.raises(ModelLoadError, match=r"unknown model 'gpt2'\. Known names: 'smollm2-135m'.*local Hugging Face model directory"):
        models.load("gpt2")


def test_missing_directory_is_an_unknown_name_not_a_hub_download(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="unknown model .*no-such-dir"):
        models.load(str(tmp_path / "no-such-dir"))


@pytest.mark.parametrize("name", ["smollm2-135m", "SmolLM2-135M", "smollm2"])
def test_smollm2_names_route_to_the_smollm2_loader(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(models._smollm2, "load", lambda **kw: calls.append(kw) or nn.Identity())
    models.load(name, device="cpu", dtype=torch.float64, processed=False)
    assert calls == [{"device": "cpu", "dtype": torch.float64, "processed": False}]


def test_zoo_names_route_to_the_registry_with_keyword_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[dict[str, Any]] = []

    def factory(**kw: Any) -> nn.Module:
        built.append(kw)
        return nn.Linear(2, 2)

    monkeypatch.setattr(models, "_zoo_registry", lambda: {"toy-zoo": factory})
    model = models.load("toy-zoo", dtype=torch.float64, width=3)
    assert built == [{"width": 3}]
    assert next(model.parameters()).dtype == torch.float64
    assert "toy-zoo" in models.known_names()


def test_an_import_error_in_the_bundled_zoo_is_raised_not_hidden(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tl_interp.models.zoo", None)  # import now fails
    with pytest.raises(ImportError, match="tl_interp.models.zoo"):
        models.load("induction-2l")
    with pytest.raises(ImportError, match="tl_interp.models.zoo"):
        models.known_names()


def test_real_zoo_names_are_known() -> None:
    from tl_interp.models import zoo

    assert set(zoo.REGISTRY) == {"induction-2l", "s5-mlp", "ordinal-4l"}
    assert set(zoo.REGISTRY) <= set(models.known_names())


def test_a_directory_loads_with_the_requested_backend(tmp_path: Path) -> None:
    path = models.make_tiny_hf_dir(tmp_path, "gpt2")
    assert isinstance(models.load(str(path), device="cpu"), hooked_class())
    assert isinstance(models.load(path, device="cpu", backend="bridge"), TransformerBridge)


def test_dtype_is_applied_to_directory_loads(tmp_path: Path) -> None:
    model = models.load(models.make_tiny_hf_dir(tmp_path, "llama"), device="cpu", dtype=torch.float64)
    assert model.W_Q.dtype == torch.float64 and model.cfg.dtype == torch.float64


def test_public_names() -> None:
    assert set(models.__all__) >= {"load", "adapt", "ModelAdapter", "Tokenized", "make_tiny_hf_dir"}
    assert all(hasattr(models, name) for name in models.__all__)


@pytest.mark.parametrize("backend", [pytest.param("hooked", marks=pytest.mark.hooked), "bridge"])
def test_local_directories_load_with_trust_remote_code_false_explicitly(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    import transformers

    path = models.make_tiny_hf_dir(tmp_path, "llama")
    calls: list[tuple[str, Any]] = []
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        real = cls.from_pretrained.__func__

        def spy(klass: Any, *args: Any, _real: Any = real, _name: str = cls.__name__, **kw: Any) -> Any:
            calls.append((_name, kw.get("trust_remote_code", "not passed")))
            return _real(klass, *args, **kw)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(spy))
    models.load(path, device="cpu", backend=backend)
    # tl_interp's own calls come first; TransformerLens's later reload of the tokenizer passes
    # nothing, which is why directories with code of their own are refused (next test)
    ours = calls[:3] if backend == "hooked" else calls[:1]
    assert all(flag is False for _, flag in ours), calls
    if backend == "hooked":
        assert [name for name, _ in ours] == ["AutoConfig", "AutoModelForCausalLM", "AutoTokenizer"]


@pytest.mark.parametrize("file", ["config.json", "tokenizer_config.json"])
def test_a_directory_with_code_of_its_own_is_refused_before_loading(tmp_path: Path, file: str) -> None:
    import json

    path = models.make_tiny_hf_dir(tmp_path, "llama")
    doc = json.loads((path / file).read_text())
    (path / file).write_text(json.dumps({**doc, "auto_map": {"AutoModelForCausalLM": "modeling_x.X"}}))
    with pytest.raises(ModelLoadError, match=rf"{file}' has an 'auto_map' entry: the directory ships its own "
                                             r"Python code, which tl_interp never runs"):
        models.load(path, device="cpu")
