"""The tl-interp command."""

import pytest

from tl_interp.cli import main


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
