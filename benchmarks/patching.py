"""Benchmark: tl_interp's exact patching sweep vs TransformerLens's patching functions.

Prints both times, the speed ratio and the max abs difference of the results, measured in
the same run:
  (a) a random 6-layer d_model-256 HookedTransformer, 8 prompts x 16 tokens, resid_pre over
      every layer and position (TL: get_act_patch_resid_pre); also attribution patching
      (ti.patching.attribution) against the same TL sweep, with its correlation to exact;
  (b) SmolLM2-135M on real clean/corrupted prompt pairs (skip with --skip-real);
  (c) Gemma-3-270M (--gemma; the opt-in package must be installed).

On TransformerLens 4 (no HookedTransformer; run it in that environment: `./dev.sh --tl4`), the
same cases run on TransformerBridge models in compatibility mode ((a) a native Bridge of the same
architecture, (b) SmolLM2 booted from its converted directory), against TL 4's own
get_act_patch_resid_pre in the same run; the "fast paths" line says which engine paths the Bridge
takes and why the others are off. The two TransformerLens versions can't share a process: compare
the two runs' lines (each ratio is against its own TransformerLens).

The corrupted prompts differ from the clean ones at one position, as in most studies, so
the cells before it (and, entering layer 0, all but that one) patch values identical to the
base run's: the sweep skips their forward passes (exact: such a patch changes nothing).
A second line times the sweep with that skipping turned off, every cell through the
stacked-forward engine, to show what the engine alone gives. A plain-metric line times the same
kind of sweep with TransformerLens's own convention, a ``logits -> scalar`` function (issue 26:
the random model of the issue, d_vocab 5,000, corrupted at two positions; and SmolLM2).

Run: python benchmarks/patching.py [--skip-real] [--gemma] [--repeats N]
"""

import argparse
import warnings

import torch

warnings.filterwarnings("ignore")

import tl_interp as ti  # noqa: E402
from _cases import plain_logit_diff, random_patching_case  # noqa: E402
from _timing import timed  # noqa: E402
from transformer_lens import patching as tl_patching  # noqa: E402




# equal token lengths in every row, so TransformerLens sees unpadded inputs too
SMOLLM2_PAIRS = [("January, February, March, April,", "June, July, August, September,", " May", " October"),
                 ("March, April, May, June,", "August, September, October, November,", " July", " December"),
                 ("one, two, three, four,", "five, six, seven, eight,", " five", " nine"),
                 ("two, three, four, five,", "four, five, six, seven,", " six", " eight")]


def compare(label, model, clean, corrupted, metric, repeats, attribution=True):
    _, clean_cache = model.run_with_cache(clean)
    with torch.inference_mode():
        model(corrupted)  # warm-up
    (w_tl, c_tl), ref = timed(lambda: tl_patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric), repeats)
    (w_us, c_us), ours = timed(lambda: ti.patching.sweep(model, clean, corrupted, metric, progress=False), repeats)
    diff = (ours.values - ref.float().cpu()).abs().max().item()
    skipped, cells = ours.provenance.settings["cells_skipped"], ours.values.numel()
    print(f"[{label}] resid_pre sweep {tuple(ref.shape)}: TransformerLens {w_tl:.2f}s wall / {c_tl:.2f}s CPU, "
          f"tl_interp {w_us:.2f}s wall / {c_us:.2f}s CPU; speed-up {w_tl / w_us:.1f}x wall, {c_tl / c_us:.1f}x CPU; "
          f"max |diff| {diff:.1e} ({skipped}/{cells} cells unchanged, skipped)")
    paths = ", ".join(f"{k} {v}" for k, v in ours.provenance.settings["engine"].items())
    print(f"[{label}]   fast paths: {paths}")
    (w_all, c_all), every = timed(lambda: ti.patching.sweep(model, clean, corrupted, metric, progress=False,
                                                            skip_unchanged=False), repeats)
    diff = (every.values - ref.float().cpu()).abs().max().item()
    print(f"[{label}]   every cell computed (no skipping): tl_interp {w_all:.2f}s wall / {c_all:.2f}s CPU; "
          f"speed-up {w_tl / w_all:.1f}x wall, {c_tl / c_all:.1f}x CPU; max |diff| {diff:.1e}")
    if attribution:
        (w_atp, c_atp), atp = timed(lambda: ti.patching.attribution(model, clean, corrupted, metric, progress=False),
                                    repeats)
        a, b = atp.values.flatten().double(), ref.flatten().double().cpu()
        r = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        print(f"[{label}] attribution patching: {w_atp:.3f}s wall / {c_atp:.3f}s CPU; speed-up vs TL exact "
              f"{w_tl / w_atp:.1f}x wall, {c_tl / c_atp:.1f}x CPU; Pearson r with exact {r:.3f}")


def compare_plain(label, model, clean, corrupted, plain, repeats):
    """The sweep with a plain ``logits -> scalar`` metric (TransformerLens's convention): the
    engine traces where it reads (tl_interp.engine.reads) and takes the fast paths there."""
    _, clean_cache = model.run_with_cache(clean)
    (w_tl, c_tl), ref = timed(lambda: tl_patching.get_act_patch_resid_pre(model, corrupted, clean_cache, plain), repeats)
    (w_us, c_us), ours = timed(lambda: ti.patching.sweep(model, clean, corrupted, plain, progress=False), repeats)
    diff = (ours.values - ref.float().cpu()).abs().max().item()
    engine = ours.provenance.settings["engine"]
    print(f"[{label}] plain metric (logits -> scalar), resid_pre sweep {tuple(ref.shape)}: TransformerLens "
          f"{w_tl:.2f}s wall / {c_tl:.2f}s CPU, tl_interp {w_us:.2f}s wall / {c_us:.2f}s CPU; speed-up "
          f"{w_tl / w_us:.1f}x wall, {c_tl / c_us:.1f}x CPU; max |diff| {diff:.1e}")
    print(f"[{label}]   read_only {engine['read_only']}, prefix_kv {engine['prefix_kv']}, split_final "
          f"{engine['split_final']}, head_columns {engine['head_columns']}; {engine['plain_metric']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--gemma", action="store_true", help="also Gemma-3-270M (opt-in package; slow)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 keeps timings steady on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, transformer-lens {ti.compat.tl_version()}")

    model, clean, corrupted, metric = random_patching_case()
    compare("a: random 6L d256", model, clean, corrupted, metric, args.repeats)
    # issue 26's case: d_vocab 5,000, corrupted at two positions, a plain logit difference
    compare_plain("a2: issue 26, random 6L d256 d_vocab 5000",
                  *random_patching_case(d_vocab=5000, corrupt=(5, 9), plain=True), args.repeats)

    if not args.skip_real:
        case = real_case(ti.models.load("smollm2-135m"), SMOLLM2_PAIRS)
        compare("b: SmolLM2-135M", *case[:4], 1)
        compare_plain("b: SmolLM2-135M", *case[:3], case[4], 1)
    if args.gemma:
        pairs = [("January, February, March,", "June, July, August,", " April", " September"),
                 ("one, two, three,", "five, six, seven,", " four", " eight")]
        compare("c: Gemma-3-270M", *real_case(ti.models.load("gemma-3-270m"), pairs)[:4], 1)


def real_case(model, pairs):
    """A real model and its clean/corrupted pairs (of one token length) with their answers' logit
    difference, as a metric and as a plain function."""
    adapter = ti.models.adapt(model)
    clean = adapter.tokenize([p[0] for p in pairs])
    corrupted = adapter.tokenize([p[1] for p in pairs])
    if clean.padded or corrupted.padded or clean.shape != corrupted.shape:
        raise SystemExit("benchmark pairs must tokenize to one length, unpadded, so TransformerLens sees the same inputs")
    ids = lambda words: torch.tensor([adapter.tokenize(w, prepend_bos=False).tokens[0, 0] for w in words])  # noqa: E731
    correct, wrong = ids([p[2] for p in pairs]), ids([p[3] for p in pairs])
    metric = ti.metrics.logit_diff(correct, wrong, positions=-1)  # unpadded: TL calls it without the batch
    return model, clean.tokens, corrupted.tokens, metric, plain_logit_diff(correct, wrong)

if __name__ == "__main__":
    main()
