"""Benchmark: one patching sweep run locally and on a local 2-worker Ray instance, in one run.

Prints the wall times (Ray cold: workers starting, the model shipped, base runs built; Ray
warm: the same sweep again on the running workers), the speed ratio against the local run,
the per-shard overhead (a shard's round trip less the worker's own time), and the max abs
difference of the values. A last line reruns the sweep with a store that already holds every
shard. The model is a random 6-layer d_model-256 HookedTransformer; the sweep patches z over
every layer, position and head of 8 prompts x 16 tokens, every cell computed
(``skip_unchanged=False``), one torch thread per process.

The Ray instance stays on 127.0.0.1 (no dashboard) and is shut down at the end.

Run: python benchmarks/distributed.py [--repeats N] [--workers 2]
"""

import argparse
import os
import tempfile
import warnings

os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # before ray is imported: loopback only
warnings.filterwarnings("ignore")

import ray  # noqa: E402
import torch  # noqa: E402

import tl_interp as ti  # noqa: E402
from _cases import random_patching_case  # noqa: E402
from _timing import timed  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(1)
    model, clean, corrupted, metric = random_patching_case()
    cfg = model.cfg

    def sweep(executor=None):
        return ti.patching.sweep(model, clean, corrupted, metric, site="z", over=("pos", "head_index"),
                                 skip_unchanged=False, executor=executor, progress=False)

    print(f"torch {torch.__version__}, ray {ray.__version__}, 1 torch thread per process; "
          f"{cfg.n_layers * 16 * cfg.n_heads} cells (layer x pos x head); load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs")
    ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    try:
        assert ray.nodes()[0]["NodeManagerAddress"] == "127.0.0.1"
        ex = ti.distributed.RayExecutor(num_workers=args.workers)
        (w_cold, _), cold = timed(lambda: sweep(ex), 1)
        w_local = w_warm = float("inf")
        for _ in range(args.repeats):  # alternated, best of each: the machine's load drifts
            (w, _), local = timed(sweep, 1)
            w_local = min(w_local, w)
            (w, _), warm = timed(lambda: sweep(ex), 1)
            w_warm = min(w_warm, w)
        s = warm.provenance.settings
        diff = max((cold.values - local.values).abs().max().item(), (warm.values - local.values).abs().max().item())
        print(f"local:            {w_local:.2f}s wall ({local.provenance.settings['passes']} passes)")
        print(f"ray cold start:   {w_cold:.2f}s wall (workers start, model shipped once, base runs built)")
        print(f"ray warm:         {w_warm:.2f}s wall on {s['workers']} workers, {s['shards']} shards of "
              f"{s['shard_size']} cells ({s['passes']} passes); speed-up vs local {w_local / w_warm:.2f}x; "
              f"per-shard overhead {s['shard_overhead_ms']:.1f} ms; worker compute {s['worker_compute_s']:.2f}s "
              f"in total; max |diff| vs local {diff:.1e}")
        with tempfile.TemporaryDirectory() as store:
            stored = ti.distributed.RayExecutor(num_workers=args.workers, store=store)
            (w_write, _), _ = timed(lambda: sweep(stored), 1)
            (w_read, _), again = timed(lambda: sweep(stored), 1)
            s = again.provenance.settings
            diff = (again.values - local.values).abs().max().item()
            print(f"with store=:      {w_write:.2f}s writing {s['shards']} shards; rerun {w_read:.2f}s "
                  f"({s['shards_reused']} reused, {s['shards_computed']} computed); max |diff| {diff:.1e}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
