"""Reliability probes (issue 10): files the toolkit writes and reads.

Every stored artefact (zoo weights and cards, SAE weights and cards, results, steering
vectors, the SmolLM2 conversion cache) must be verified on load: one flipped byte, a
truncated, empty or foreign file is an ``ArtifactError`` naming the file and the fix, never
garbage logits. Saves are crash-safe and respect the umask.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch

import tl_interp as ti
from tl_interp.errors import ArtifactError, ModelLoadError
from tl_interp.results import Provenance, Result
from tl_interp.steering import SteeringVector

ROOT = Path(__file__).resolve().parents[1]


def flip_data_byte(path: Path) -> None:
    """Change one byte of a safetensors file's tensor data (its size stays the same)."""
    raw = bytearray(path.read_bytes())
    header = int.from_bytes(raw[:8], "little")
    at = 8 + header + (len(raw) - 8 - header) // 2
    raw[at] ^= 0x40
    path.write_bytes(bytes(raw))


def flip_json_digit(path: Path) -> None:
    """Change one digit of a JSON file (it still parses, and says something else)."""
    text = path.read_text()
    at = next(i for i, c in enumerate(text) if c.isdigit() and i > len(text) // 3)
    path.write_text(text[:at] + str((int(text[at]) + 1) % 10) + text[at + 1:])


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


# -- issue item 9: corrupted files ---------------------------------------------------------
def _zoo(tmp: Path, file: str) -> tuple[Path, Any]:
    zoo = copy_zoo(tmp)
    return zoo / file, lambda: ti.models.zoo.load("ordinal-4l", directory=zoo)


def _sae(tmp: Path, file: str) -> tuple[Path, Any]:
    saes = copy_sae(tmp)
    return saes / "ordinal-4l-res-l2" / file, lambda: ti.models.load_sae("ordinal-4l-res-l2", directory=saes)


@pytest.mark.parametrize("copy, file", [
    (_zoo, "weights/ordinal-4l.safetensors"),  # probe 9: "same-size byte corruption of ... zoo weights"
    (_zoo, "cards/ordinal-4l.json"),  # probe 9 for cards (a digit changed: the JSON still parses)
    (_sae, "sae_weights.safetensors"),  # probe 9: "... or SAE weights loads silently"
    (_sae, "card.json"),
])
def test_a_flipped_byte_in_a_packaged_artefact_is_an_artifact_error(tmp_path: Path, copy: Any, file: str) -> None:
    path, load = copy(tmp_path, file)
    (flip_data_byte if path.suffix == ".safetensors" else flip_json_digit)(path)
    with pytest.raises(ArtifactError, match=re.escape(path.name)):
        load()


def test_a_flipped_byte_in_a_saved_result_is_an_artifact_error(tmp_path: Path) -> None:
    # probe 9 for results
    path = a_result().save(tmp_path / "r.safetensors")
    flip_data_byte(path)
    with pytest.raises(ArtifactError, match="r.safetensors"):
        Result.load(path)


def test_a_flipped_byte_in_a_saved_steering_vector_is_an_artifact_error(tmp_path: Path) -> None:
    # probe 9 for steering vectors
    path = SteeringVector(torch.arange(8.0), "blocks.0.hook_resid_pre").save(tmp_path / "v.safetensors")
    flip_data_byte(path)
    with pytest.raises(ArtifactError, match="v.safetensors"):
        SteeringVector.load(path)


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


# -- issue item 12: extras order; item 11: umask ---------------------------------------------
def test_extras_keep_their_order_through_save_and_load(tmp_path: Path) -> None:
    # probe 12: "a result's extras come back in a different order after save/load"
    result = a_result()
    loaded = Result.load(result.save(tmp_path / "r.safetensors"))
    assert list(loaded.extras) == list(result.extras) == ["zeta", "alpha"]
    assert list(loaded.to_frame().columns) == list(result.to_frame().columns)


@pytest.mark.parametrize("umask, mode", [pytest.param(0o022, 0o644), (0o077, 0o600),
                                         pytest.param(0o002, 0o664)])
def test_saved_files_respect_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    # probe 11: "saved files are 0600 despite the docstring (respect the umask)"
    old = os.umask(umask)
    try:
        paths = [a_result().save(tmp_path / "r.safetensors"),
                 SteeringVector(torch.ones(4), "blocks.0.hook_resid_pre").save(tmp_path / "v.safetensors")]
    finally:
        os.umask(old)
    assert [oct(p.stat().st_mode & 0o777) for p in paths] == [oct(mode)] * 2


# -- crash safety -----------------------------------------------------------------------------
_KILLED_SAVE = """
import sys, time, torch
import safetensors.torch as st
from tl_interp.results import Provenance, Result
import tl_interp._io as io
path = sys.argv[1]
def stalled(tensors, name, metadata=None):
    with open(name, "wb") as f:
        f.write(b"half a file")
        f.flush()
    print("writing", flush=True)
    time.sleep(600)
st.save_file = stalled  # save_checked imports it at call time
Result(values=torch.ones(2), axes=("layer",), metric="new", provenance=Provenance.make("test")).save(path)
"""


@pytest.fixture(scope="module")
def killed_save(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A saved result whose next save was killed with SIGKILL half-way (one child process for both tests)."""
    path = a_result().save(tmp_path_factory.mktemp("killed") / "r.safetensors")
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(_KILLED_SAVE), str(path)], stdout=subprocess.PIPE,
                             cwd=ROOT, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "writing"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=60)
    return path


def test_kill_9_during_a_save_leaves_the_previous_file_intact(killed_save: Path) -> None:
    # issue: "A kill -9 during a save leaves the previous file intact"
    assert Result.load(killed_save).metric == "m"


def test_the_next_save_after_a_kill_9_leaves_no_temporary_litter(killed_save: Path) -> None:
    # issue: "... and no temporary litter after the next save (clean up stale temporaries)"
    a_result().save(killed_save)
    assert sorted(p.name for p in killed_save.parent.iterdir()) == ["r.safetensors"]


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


def test_local_directories_load_with_trust_remote_code_false(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # unclear error: "pass trust_remote_code=False explicitly when loading local directories"
    import transformers

    seen: list[tuple[str, Any]] = []
    for cls in (transformers.AutoConfig, transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
        original = cls.from_pretrained

        def recording(*args: Any, _original: Any = original, _name: str = cls.__name__, **kwargs: Any) -> Any:
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("tl_interp"):  # TL's own reloads can't be told; directories with code are refused
                seen.append((_name, kwargs.get("trust_remote_code", "not passed")))
            return _original(*args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", recording)
    ti.models.load(ti.models.make_tiny_hf_dir(str(tmp_path), "llama"), device="cpu")
    assert seen and all(flag is False for _, flag in seen), seen
