"""The studies whose values must be equal on TransformerLens 3.9 and 4.x (issue 25).

``studies(model)`` runs a patching sweep, an ablation scan, a steering evaluation and a similarity
comparison on one model and returns every value as a named tensor. ``tests/data/make_tl_references.py``
runs it on TransformerLens 3.9 (a HookedTransformer) and commits the values;
``tests/test_tl_versions.py`` runs it again on whichever TransformerLens is installed (on 4.x the
same weights in a TransformerBridge) and compares. Both processes can't share one run, so the
reference is a file; running the comparison on 3.9 too keeps the file from rotting.
"""

from typing import Any

import torch
from torch import Tensor

import tl_interp as ti

ZOO_MODEL = "ordinal-4l"
REAL_MODEL = "smollm2-135m"
# prompts of equal token length (word-level tokenizer: one token per word / comma)
CLEAN = ["one , two ,", "monday , tuesday ,", "march , april ,"]
CORRUPT = ["two , one ,", "tuesday , monday ,", "april , march ,"]
ANSWERS = [("three", "zero"), ("wednesday", "sunday"), ("may", "february")]


def _tensors(prefix: str, result: Any) -> dict[str, Tensor]:
    out = {f"{prefix}.values": torch.as_tensor(result.values, dtype=torch.float64)}
    for key, value in sorted(getattr(result, "extras", {}).items()):
        if isinstance(value, Tensor) and value.is_floating_point():
            out[f"{prefix}.{key}"] = value.detach().to(torch.float64)
    return out


def studies(model: Any) -> dict[str, Tensor]:
    """Every value of the four studies on ``model`` (ordinal-4l), float64 on CPU."""
    right = torch.tensor([model.to_single_token(a) for a, _ in ANSWERS])
    wrong = torch.tensor([model.to_single_token(b) for _, b in ANSWERS])
    metric = ti.metrics.logit_diff(right[:1], wrong[:1])
    out: dict[str, Tensor] = {}
    out |= _tensors("sweep", ti.patching.sweep(model, CLEAN[:1], CORRUPT[:1], metric, site="resid_pre",
                                              progress=False))
    out |= _tensors("sweep_heads", ti.patching.sweep(model, CLEAN[:1], CORRUPT[:1], metric, site="z",
                                                    progress=False))
    out |= _tensors("scan", ti.ablation.scan(model, CLEAN, ti.metrics.logit_diff(right, wrong), over="head_index",
                                            method="mean",
                                            reference=CLEAN + CORRUPT, n_boot=50, progress=False))
    vector = ti.steering.contrast_vector(model, CLEAN, CORRUPT, "blocks.2.hook_resid_pre", name="order")
    tasks = {"next": [(p, a) for p, (a, _) in zip(CLEAN, ANSWERS)]}
    report = ti.steering.evaluate(model, tasks, vector, [0.0, 1.0, 4.0], n_boot=50, progress=False)
    out |= _tensors("steering", report)
    X = ti.collect(model, CLEAN + CORRUPT, "blocks.1.hook_resid_post", progress=False)["blocks.1.hook_resid_post"]
    Y = ti.collect(model, CLEAN + CORRUPT, "blocks.3.hook_resid_post", progress=False)["blocks.3.hook_resid_post"]
    sim = ti.similarity.compare(X, Y, measures=("cka", "rsa", "procrustes"), n_permutations=20, n_boot=20)
    out |= _tensors("similarity", sim)
    return out


def real_model_sweep(model: Any) -> dict[str, Tensor]:
    """A residual sweep on SmolLM2-135M at four layers (the real-model equality, tolerance 1e-4)."""
    clean, corrupt = "The capital of France is the city of", "The capital of Italy is the city of"
    metric = ti.metrics.logit_diff(model.to_single_token(" Paris"), model.to_single_token(" Rome"))
    result = ti.patching.sweep(model, clean, corrupt, metric, site="resid_pre", layers=[0, 10, 20, 29],
                               progress=False)
    return _tensors("sweep", result)
