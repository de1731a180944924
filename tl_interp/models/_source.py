"""Which weights an artefact trained on a model (an SAE, a tuned lens) was trained on: the
weights file and its SHA-256, as the artefact's card records them.

Example:
    >>> source = weights_source("ordinal-4l")
    >>> source["weights_file"], len(source["weights_sha256"])
    ('ordinal-4l.safetensors', 64)
"""

from typing import Any

from tl_interp._io import sha256_file
from tl_interp.errors import ModelLoadError

__all__ = ["weights_source"]


def weights_source(name: str) -> dict[str, Any]:
    """``{"name", "weights_file", "weights_sha256"}`` of a model ``tl_interp.models.load`` knows by
    name: the bundled SmolLM2-135M's GGUF file, Gemma-3-270M's package, or a zoo model's
    safetensors. Any other name is an error (an artefact's card must not name the wrong weights)."""
    from tl_interp.models import _gemma, _smollm2

    if name == _smollm2.NAME:
        return {"name": name, "weights_file": _smollm2.gguf_path().name, "weights_sha256": _smollm2.gguf_sha256()}
    if name == _gemma.NAME:
        return {"name": name, "weights_file": _gemma.package().MODEL_NAME, "weights_sha256": _gemma.source_sha256()}
    from tl_interp.models.zoo import REGISTRY
    from tl_interp.models.zoo._store import weights_path

    if name in REGISTRY:
        path = weights_path(name)
        return {"name": name, "weights_file": path.name, "weights_sha256": sha256_file(path)}
    raise ModelLoadError(f"weights_source: {name!r} is not a bundled model ({_smollm2.NAME!r}, {_gemma.NAME!r} or "
                         f"one of the zoo's {sorted(REGISTRY)}); a card records only weights tl_interp can find again")
