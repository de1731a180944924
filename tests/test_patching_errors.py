"""Patching sweeps and attribution refuse what they cannot compute before any forward pass."""

from typing import Any

import pytest
import torch

import tl_interp as ti
from tests.reliability import no_forward, tiny
from tests.token_pair import CLEAN, CORRUPTED, METRIC
from tl_interp.errors import OptionError, ShapeError
from tl_interp.models import Tokenized


# -- issue 10's reliability probes (formerly tests/test_reliability_studies.py) --
@pytest.mark.parametrize("kwargs, error, message", [
    ({"site": "resid_pr"}, OptionError, "sweeps cover the site kinds .* got 'resid_pr'"),  # own probe
    ({"over": "head_index"}, OptionError, "a resid_pre sweep goes over"),  # own probe
    ({"direction": "up"}, OptionError, "direction must be one of 'denoise', 'noise'"),  # own probe
    ({"layers": []}, ti.SelectionError, "layers is empty"),  # own probe
    ({"layers": [-1]}, ti.SelectionError, r"layers \[-1\] are out of range"),  # own probe: negative layer
])
def test_sweep_options_are_checked_before_any_forward_pass(kwargs: dict[str, Any], error: type, message: str) -> None:
    model = tiny()
    with no_forward(model), pytest.raises(error, match=message):
        ti.patching.sweep(model, CLEAN, CORRUPTED, METRIC, progress=False, **kwargs)


def test_clean_and_corrupted_that_do_not_line_up_are_refused_before_any_forward_pass() -> None:
    model = tiny()
    with no_forward(model):
        with pytest.raises(ShapeError, match=r"same shape .* clean \(2, 6\) and corrupted \(2, 5\)"):
            ti.patching.sweep(model, CLEAN, CORRUPTED[:, :5], METRIC, progress=False)
        with pytest.raises(ShapeError, match=r"padded differently in rows \[0\]"):
            clean = Tokenized(CLEAN, torch.tensor([[1] * 5 + [0], [1] * 6]), torch.tensor([4, 5]), [["x"] * 6] * 2)
            corrupted = Tokenized(CORRUPTED, torch.ones(2, 6, dtype=torch.long), torch.tensor([5, 5]), [["x"] * 6] * 2)
            ti.patching.sweep(model, clean, corrupted, METRIC, progress=False)
