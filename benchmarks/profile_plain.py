"""Profile tl_interp's side of the SmolLM2 patching sweep (benchmarks/patching.py, case b) alone.

Times ``ti.patching.sweep`` with the plain ``logits -> scalar`` metric and with the
``ti.metrics`` one (CPU time, best of ``--repeats``), then profiles one plain sweep under
cProfile with a CPU-time clock (a wall clock charges a loaded machine's waits to whatever
line was running). TransformerLens's ~100 s sweep is not run: compare with patching.py.

Run: python benchmarks/profile_plain.py [--repeats N] [--top K]
"""

import argparse
import cProfile
import pstats
import time
import warnings

import torch

warnings.filterwarnings("ignore")

import tl_interp as ti  # noqa: E402
from patching import SMOLLM2_PAIRS, real_case  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, clean, corrupted, metric, plain = real_case(ti.models.load("smollm2-135m"), SMOLLM2_PAIRS)
    ti.patching.sweep(model, clean, corrupted, plain, progress=False)  # warm-up
    for name, m in (("plain", plain), ("ti.metrics", metric)):
        best = float("inf")
        for _ in range(args.repeats):
            start = time.process_time()
            ti.patching.sweep(model, clean, corrupted, m, progress=False)
            best = min(best, time.process_time() - start)
        print(f"{name}: {best:.2f}s CPU (best of {args.repeats})")
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    ti.patching.sweep(model, clean, corrupted, plain, progress=False)
    profile.disable()
    pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)


if __name__ == "__main__":
    main()
