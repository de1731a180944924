"""Crash-safe writes: atomic replace, fsync before rename, the umask, and no temporary litter
after a writer is killed with SIGKILL mid-save."""

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tl_interp import _io
from tl_interp._io import atomic_dir, atomic_file, load_checked, read_checked_json, save_checked, write_checked_json
from tl_interp.errors import ArtifactError
from tl_interp.results import Provenance, Result
from tl_interp.steering import SteeringVector
from tl_interp.viz import Report


def _litter(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp-" in p.name)


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_saved_files_get_the_permissions_the_umask_allows(tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        with atomic_file(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        with atomic_dir(tmp_path / "entry") as tmp:
            (tmp / "inner.txt").write_text("y")
    finally:
        os.umask(old)
    old = os.umask(umask)
    try:
        # safetensors writes through a private temporary of its own: the mode must still follow the umask
        path = save_checked(tmp_path / "x.safetensors", {"v": torch.ones(2)}, {})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert (tmp_path / "f.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "entry" / "inner.txt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "entry").stat().st_mode & 0o777 == mode | 0o111 & ~umask


def test_the_file_and_its_directory_are_fsynced_before_and_after_the_rename(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append("fsync " + Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        events.append("replace")
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    with atomic_file(tmp_path / "f.txt") as tmp:
        tmp.write_text("x")
    assert events[0].startswith("fsync .f.txt.tmp-") and events[1:] == ["replace", f"fsync {tmp_path.name}"]


def test_a_failing_body_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and _litter(tmp_path) == []


_WRITER = textwrap.dedent("""
    import sys, time
    from tl_interp._io import atomic_file
    with atomic_file(sys.argv[1]) as tmp:
        with open(tmp, "w") as f:
            f.write("half of the new content")
            f.flush()
            print("writing", flush=True)
            time.sleep(60)
""")


def test_kill_9_during_a_save_keeps_the_previous_file_and_the_next_save_removes_the_litter(tmp_path: Path) -> None:
    target = tmp_path / "result.safetensors"
    save_checked(target, {"v": torch.arange(4.0)}, {"run": "previous"})
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "writing"
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert len(_litter(tmp_path)) == 1  # the killed writer's temporary is still there
    tensors, meta = load_checked(target, fix="")
    assert meta == {"run": "previous"} and torch.equal(tensors["v"], torch.arange(4.0))

    save_checked(target, {"v": torch.ones(2)}, {"run": "next"})
    assert _litter(tmp_path) == []
    assert load_checked(target, fix="")[1] == {"run": "next"}


def test_a_live_writers_temporary_is_not_removed(tmp_path: Path) -> None:
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".f.txt.tmp-{sleeper.pid}-abc"
        live.write_text("in progress")
        with atomic_file(tmp_path / "f.txt") as tmp:
            tmp.write_text("x")
        assert live.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    with atomic_file(tmp_path / "f.txt") as tmp:
        tmp.write_text("y")
    assert not live.exists()


def test_stale_directories_of_killed_writers_are_removed_by_the_next_publish(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".entry.tmp-{int(dead.stdout)}-xyz"
    (stale / "sub").mkdir(parents=True)
    with atomic_dir(tmp_path / "entry") as tmp:
        (tmp / "a").write_text("a")
    assert not stale.exists() and (tmp_path / "entry" / "a").read_text() == "a"


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_checked_json_rejects_a_changed_value_an_empty_file_and_a_foreign_document(tmp_path: Path) -> None:
    path = write_checked_json(tmp_path / "card.json", {"loss": 0.25, "name": "m"})
    assert read_checked_json(path, fix="retrain it") == {"loss": 0.25, "name": "m"}
    text = path.read_text()
    _flip(path, text.index("0.25") + 3)  # 0.25 -> 0.24: still valid JSON
    with pytest.raises(ArtifactError, match=r"card.json' does not match its checksum: the file is corrupt; retrain it"):
        read_checked_json(path, fix="retrain it")
    path.write_text("")
    with pytest.raises(ArtifactError, match=r"is not readable JSON .*truncated or corrupt; retrain it"):
        read_checked_json(path, fix="retrain it")
    path.write_text('{"loss": 0.25}')
    with pytest.raises(ArtifactError, match=r"has no 'checksum' entry, so it was not written by tl_interp"):
        read_checked_json(path, fix="retrain it")
    with pytest.raises(ArtifactError, match=r"nothing.json' is missing; retrain it"):
        read_checked_json(tmp_path / "nothing.json", fix="retrain it")


def test_checked_safetensors_detect_every_single_byte_flip_in_data_and_header(tmp_path: Path) -> None:
    path = save_checked(tmp_path / "x.safetensors", {"a": torch.arange(6.0), "b": torch.tensor([True, False])},
                        {"meta": '{"k": 1}'})
    clean = path.read_bytes()
    header_len = int.from_bytes(clean[:8], "little")
    # every data byte, and the digit inside the header's metadata (1 -> 0 keeps the JSON valid)
    digit = clean.index(b'\\"k\\": 1', 8) + len(b'\\"k\\": ')
    assert digit < 8 + header_len and clean[digit:digit + 1] == b"1"
    offsets = [*range(8 + header_len, len(clean)), digit]
    for offset in offsets:
        path.write_bytes(clean)
        _flip(path, offset)
        with pytest.raises(ArtifactError, match=r"x.safetensors"):
            load_checked(path, fix="save it again")
    path.write_bytes(clean[: len(clean) - 3])
    with pytest.raises(ArtifactError, match=r"not a readable safetensors file .*empty, truncated or of another kind"):
        load_checked(path, fix="save it again")


def test_a_safetensors_file_without_our_checksum_is_refused(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    save_file({"v": torch.ones(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(ArtifactError, match=r"carries no tl_interp checksum, so tl_interp did not write it; save"):
        load_checked(tmp_path / "foreign.safetensors", fix="save it again")


def test_hashing_is_streamed_and_matches_hashlib(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hashlib

    monkeypatch.setattr(_io, "_BLOCK", 7)  # many blocks, one odd-sized tail
    path = tmp_path / "f.bin"
    path.write_bytes(bytes(range(256)) * 3)
    assert _io.sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_stale_sweep_removes_only_the_targets_own_temporaries(tmp_path: Path) -> None:
    for i in range(50):
        (tmp_path / f"other-{i}.tmp").write_text("keep")
    (tmp_path / ".g.txt.tmp-1-abc").write_text("another target's temporary")
    with atomic_file(tmp_path / "f.txt") as tmp:
        tmp.write_text("x")
    assert len(list(tmp_path.iterdir())) == 52  # 50 others, g.txt's temporary, f.txt


# -- issue 10's reliability probes (formerly tests/test_reliability_writes.py), beside the module they test --
def a_result() -> Result:
    return Result(values=torch.arange(6.0).reshape(2, 3), axes=("layer", "pos"), metric="logit_diff",
                  provenance=Provenance.make("test"))


def _vector() -> SteeringVector:
    return SteeringVector(torch.ones(4), "blocks.0.hook_resid_pre", name="v")


WRITERS: dict[str, Callable[[Path], Any]] = {
    "Result.save": lambda p: a_result().save(p),
    "Report.write": lambda p: Report("t").text("x").write(p),
    "SteeringVector.save": lambda p: _vector().save(p),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_writing_to_a_directory_is_an_artifact_error_naming_it(tmp_path: Path, writer: str) -> None:
    target = tmp_path / "out"
    target.mkdir()
    (target / "keep.txt").write_text("kept")
    with pytest.raises(ArtifactError, match=rf"can't write '{target}': it is a directory, and this writes one file; "
                                            rf"pass a file path, e.g. '{target}/name', or another name"):
        WRITERS[writer](target)
    assert sorted(p.name for p in target.iterdir()) == ["keep.txt"]  # no temporary left behind
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("writer", list(WRITERS))
def test_writing_under_a_file_is_an_artifact_error_naming_it(tmp_path: Path, writer: str) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    with pytest.raises(ArtifactError, match=r"can't write '.*a-file/sub/x': '.*a-file' is a file, not a directory"):
        WRITERS[writer](blocker / "sub" / "x")
    assert blocker.read_text() == "not a directory"


READERS: dict[str, Callable[[Path], Any]] = {
    "Result.save": lambda p: Result.load(p).values.tolist(),
    "Report.write": lambda p: "<p>x</p>" in p.read_text() or p.read_text(),
    "SteeringVector.save": lambda p: SteeringVector.load(p).vector.tolist(),
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_a_named_existing_file_is_replaced_as_any_save_replaces_it(tmp_path: Path, writer: str) -> None:
    target = tmp_path / "out.bin"
    WRITERS[writer](target)
    first = READERS[writer](target)
    target.write_text("older content")
    WRITERS[writer](target)
    assert READERS[writer](target) == first and target.read_bytes() != b"older content"


def test_a_directory_writer_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    from tl_interp._io import atomic_dir

    blocker = tmp_path / "entry"
    blocker.write_text("a file")
    with pytest.raises(ArtifactError, match=r"can't write the folder '.*entry': a file of that name is in the way"):
        with atomic_dir(blocker):
            pass
    assert blocker.read_text() == "a file"


def test_the_sae_writer_refuses_a_file_in_the_way(tmp_path: Path) -> None:
    from sae_lens import TopKSAE, TopKSAEConfig

    from tl_interp.training.saes import write_sae

    (tmp_path / "x").write_text("a file")
    with pytest.raises(ArtifactError, match=r"can't write the folder '.*/x': a file of that name is in the way"):
        write_sae("x", TopKSAE(TopKSAEConfig(d_in=4, d_sae=8, k=2)), {}, tmp_path)
    assert (tmp_path / "x").read_text() == "a file"
