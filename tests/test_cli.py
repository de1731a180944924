"""The tl-interp command."""

import os
from pathlib import Path

import pytest
import torch

from tl_interp.cli import main
from tl_interp.errors import ArtifactError
from tl_interp.results import Provenance, Result


def test_models_lists_every_loadable_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    names = capsys.readouterr().out.split()
    assert {"smollm2-135m", "induction-2l", "s5-mlp", "ordinal-4l"} <= set(names)


def test_inspect_prints_shape_facts_and_hooks(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "induction-2l"]) == 0
    out = capsys.readouterr().out
    assert "n_layers=2 n_heads=3" in out and "blocks.0.attn.hook_z" in out and "blocks.1.attn.hook_z" not in out
    assert "d_mlp=None" in out  # attention-only: no MLP, whatever TL's config defaults say


def test_unknown_model_is_a_clear_error() -> None:
    from tl_interp.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="smollm2-135m"):
        main(["inspect", "no-such-model"])


# -- issue 10's reliability probes (formerly tests/test_reliability_writes.py), beside the module they test --
def a_result() -> Result:
    return Result(values=torch.arange(6.0).reshape(2, 3), axes=("layer", "pos"), metric="logit_diff",
                  provenance=Provenance.make("test"))


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
