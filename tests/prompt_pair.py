"""A clean/corrupted pair of prompts for the zoo's ``ordinal-4l`` that pads (5 and 7 tokens with
BOS, right-padded), and a logit-difference metric on its answers.

Shared by the metric, patching and token-input tests that probe padded batches.
"""

from typing import Any

import torch

import tl_interp as ti
from tests.reliability import ordinal

__all__ = ["CLEAN", "CORRUPTED", "ids", "ordinal_metric"]

CLEAN = ["one , two ,", "january , february , march ,"]  # 5 and 7 tokens with BOS: right-padded
CORRUPTED = ["two , one ,", "february , january , april ,"]  # the same lengths, row by row


def ids(model: Any, words: list[str]) -> torch.Tensor:
    return torch.tensor([model.to_single_token(w) for w in words])


def ordinal_metric(rows: slice = slice(None)) -> Any:
    model = ordinal()
    return ti.metrics.logit_diff(ids(model, ["three", "april"])[rows], ids(model, ["four", "may"])[rows])
