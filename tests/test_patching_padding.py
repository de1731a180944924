"""A padded patching sweep equals the mean of its prompts' own sweeps."""

import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.prompt_pair import CLEAN, CORRUPTED, ordinal_metric
from tests.reliability import ordinal


# -- issue 10's reliability probes (formerly tests/test_reliability_inputs.py) --
# -- issue item 2: padded prompts and metrics reading position -1 ----------------------------
def test_a_padded_sweep_equals_the_mean_of_per_prompt_sweeps() -> None:
    # probe 2: lists of strings of different lengths are right-padded; the metric must not read a pad
    model = ordinal()
    padded = ti.patching.sweep(model, CLEAN, CORRUPTED, ordinal_metric(), progress=False)
    per_prompt = [ti.patching.sweep(model, CLEAN[i], CORRUPTED[i], ordinal_metric(slice(i, i + 1)), progress=False)
                  for i in range(2)]
    width = padded.values.shape[1]
    expected = torch.stack([torch.cat([r.values, r.base.expand(r.values.shape[0], width - r.values.shape[1])], 1)
                            for r in per_prompt]).mean(0)  # patching a pad after a row's end changes nothing
    assert_close(padded.values, expected, rtol=1e-5, atol=1e-5)
    assert_close(padded.base, torch.stack([r.base for r in per_prompt]).mean(), rtol=1e-5, atol=1e-5)
