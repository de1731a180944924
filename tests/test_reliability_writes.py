"""Reliability probes (issue 19): no write loses data.

No command writes over one of its inputs; a default output name never replaces an existing
file the user didn't name (the message names ``--force`` and ``-o``); a path the user named
is replaced, as any save replaces it. Every writer refuses a directory (or a path under a
file) with an ``ArtifactError`` naming the path and the fix, not an OS error naming a
hidden temporary.
"""

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from tl_interp.cli import main
from tl_interp.errors import ArtifactError
from tl_interp.results import Provenance, Result
from tl_interp.steering import SteeringVector
from tl_interp.viz import Report


def a_result() -> Result:
    return Result(values=torch.arange(6.0).reshape(2, 3), axes=("layer", "pos"), metric="logit_diff",
                  provenance=Provenance.make("test"))


# -- the report command ----------------------------------------------------------------------

def test_report_onto_its_own_input_is_refused_and_the_input_survives(tmp_path: Path) -> None:
    saved = a_result().save(tmp_path / "R.safetensors")
    before = saved.read_bytes()
    with pytest.raises(ArtifactError, match=r"the output '.*R\.safetensors' is the input '.*R\.safetensors'; "
                                            r"writing it would destroy the input: name another output file"):
        main(["report", str(saved), "-o", str(saved)])
    assert saved.read_bytes() == before
    os.link(saved, tmp_path / "alias.html")  # the same file under another name, and with --force
    with pytest.raises(ArtifactError, match="is the input"):
        main(["report", str(saved), "-o", str(tmp_path / "alias.html"), "--force"])
    assert saved.read_bytes() == before
    torch.testing.assert_close(Result.load(saved).values, a_result().values)


def test_report_does_not_replace_an_existing_page_it_was_not_told_to_write(tmp_path: Path) -> None:
    saved = a_result().save(tmp_path / "notes.safetensors")
    notes = tmp_path / "notes.html"
    notes.write_text("my own notes")
    with pytest.raises(ArtifactError, match=r"'.*notes\.html' already exists and was not named as the output; "
                                            r"nothing was written\. Pass --force to replace it, or -o PAGE\.html"):
        main(["report", str(saved)])
    assert notes.read_text() == "my own notes"


def test_report_writes_the_default_page_when_free_and_replaces_it_with_force_or_when_named(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    saved = a_result().save(tmp_path / "r.safetensors")
    page = tmp_path / "r.html"
    assert main(["report", str(saved)]) == 0 and "logit_diff" in page.read_text()
    page.write_text("stale")
    assert main(["report", str(saved), "--force"]) == 0 and "logit_diff" in page.read_text()
    named = tmp_path / "named.html"
    named.write_text("stale")
    assert main(["report", str(saved), "-o", str(named)]) == 0 and "logit_diff" in named.read_text()
    assert capsys.readouterr().out.split() == [str(page), str(page), str(named)]


def test_report_into_a_directory_names_it_and_the_fix(tmp_path: Path) -> None:
    saved = a_result().save(tmp_path / "r.safetensors")
    (tmp_path / "pages").mkdir()
    with pytest.raises(ArtifactError, match=r"can't write '.*pages': it is a directory, and this writes one file; "
                                            r"pass a file path, e.g. '.*pages/name'"):
        main(["report", str(saved), "-o", str(tmp_path / "pages")])


# -- every writer: a directory (or a path under a file) is a typed error naming the path -------

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
