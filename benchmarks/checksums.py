"""What verifying a cache entry costs: a streaming SHA-256 of every file against the warm load.

    python benchmarks/checksums.py [--model smollm2-135m|gemma-3-270m] [--repeats 3]

Prints the wall and CPU time of ``verify_manifest`` over the model's cache entry (the check
every load runs), of reading the weights with ``safetensors.load_file`` alone, and of the
whole warm ``ti.models.load``, and the ratio of verification to the whole load. The entry
must exist (load the model once first). Measured on this 2-core machine (page cache warm):
SmolLM2's 650 MB entry verifies in ~0.5 s of a ~1 s load; Gemma's 1.8 GB in ~1.2 s of ~6 s.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _timing import timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", choices=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    from safetensors.torch import load_file

    import tl_interp as ti
    from tl_interp._io import read_checked_json, verify_manifest
    from tl_interp.models import _gemma, _smollm2

    entry = (_smollm2 if args.model == "smollm2-135m" else _gemma).cache_entry()
    if not entry.is_dir():
        sys.exit(f"no cache entry for {args.model} yet; load it once: python -c \"import tl_interp as ti; "
                 f"ti.models.load({args.model!r})\"")
    meta = read_checked_json(entry / "config.json", fix="")
    size = sum(info["bytes"] for info in meta["files"].values())
    (verify, _), _ = timed(lambda: verify_manifest(entry, meta["files"], fix=""), args.repeats)
    (read, _), _ = timed(lambda: load_file(str(entry / "model.safetensors")), args.repeats)
    (whole, _), _ = timed(lambda: ti.models.load(args.model, device="cpu"), args.repeats)
    print(f"{args.model}: {size / 1e6:.0f} MB in {len(meta['files'])} files")
    print(f"  verify (SHA-256 of every file)  {verify:6.2f} s  ({size / 1e6 / verify:.0f} MB/s)")
    print(f"  read the weights (load_file)    {read:6.2f} s")
    print(f"  whole warm load (ti.models.load){whole:6.2f} s")
    print(f"  verification / warm load = {verify / whole:.2f}")


if __name__ == "__main__":
    main()
