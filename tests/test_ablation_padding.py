"""Ablation scans of padded batches equal the mean of their prompts' own scans."""

import torch
from torch.testing import assert_close

import tl_interp as ti
from tests.prompt_pair import CLEAN, ids
from tests.reliability import ordinal


# -- issue 10's reliability probes (formerly tests/test_reliability_inputs.py) --
def test_a_padded_scan_equals_the_mean_of_per_prompt_scans() -> None:
    # probe 2 for ablation scans (per-prompt metric, heads)
    model = ordinal()
    answers, wrong = ids(model, ["three", "april"]), ids(model, ["four", "may"])
    padded = ti.ablation.scan(model, CLEAN, ti.metrics.logit_diff(answers, wrong), n_boot=10, progress=False)
    singles = [ti.ablation.scan(model, [CLEAN[i]] * 2, ti.metrics.logit_diff(int(answers[i]), int(wrong[i])),
                                n_boot=10, progress=False).values for i in range(2)]  # two copies: no padding
    assert_close(padded.values, torch.stack(singles).mean(0), rtol=1e-5, atol=1e-5)


def test_a_left_padded_token_batch_scans_like_its_rows_alone() -> None:
    # own probe: left padding (TransformerLens shifts positions by the mask)
    model = ordinal()
    rows = [model.to_tokens(p)[0] for p in CLEAN]
    width = max(len(r) for r in rows)
    tokens = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(width - len(r), dtype=torch.long), torch.ones(len(r), dtype=torch.long)])
                        for r in rows])
    answers, wrong = ids(model, ["three", "april"]), ids(model, ["four", "may"])
    padded = ti.ablation.scan(model, tokens, ti.metrics.logit_diff(answers, wrong), attention_mask=mask, n_boot=10,
                              progress=False)
    singles = [ti.ablation.scan(model, rows[i][None].repeat(2, 1),
                                ti.metrics.logit_diff(int(answers[i]), int(wrong[i])), n_boot=10, progress=False).values
               for i in range(2)]
    assert_close(padded.values, torch.stack(singles).mean(0), rtol=1e-4, atol=1e-4)
