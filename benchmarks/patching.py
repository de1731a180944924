"""Benchmark: tl_interp's exact patching sweep vs TransformerLens's patching functions.

Prints both times, the speed ratio and the max abs difference of the results, measured in
the same run:
  (a) a random 6-layer d_model-256 HookedTransformer, 8 prompts x 16 tokens, resid_pre over
      every layer and position (TL: get_act_patch_resid_pre); also attribution patching
      (ti.patching.attribution) against the same TL sweep, with its correlation to exact;
  (b) SmolLM2-135M on real clean/corrupted prompt pairs (skip with --skip-real).

Run: python benchmarks/patching.py [--skip-real] [--repeats N]
"""

import argparse
import time
import warnings

import torch

warnings.filterwarnings("ignore")

import tl_interp as ti  # noqa: E402
from transformer_lens import HookedTransformer, HookedTransformerConfig  # noqa: E402
from transformer_lens import patching as tl_patching  # noqa: E402


def timed(fn, repeats):
    best, out = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def compare(label, model, clean, corrupted, metric, repeats, attribution=True):
    _, clean_cache = model.run_with_cache(clean)
    with torch.inference_mode():
        model(corrupted)  # warm-up
    t_tl, ref = timed(lambda: tl_patching.get_act_patch_resid_pre(model, corrupted, clean_cache, metric), repeats)
    t_ours, ours = timed(lambda: ti.patching.sweep(model, clean, corrupted, metric, progress=False), repeats)
    diff = (ours.values - ref.float().cpu()).abs().max().item()
    print(f"[{label}] resid_pre sweep {tuple(ref.shape)}: TransformerLens {t_tl:.2f}s, tl_interp {t_ours:.2f}s, "
          f"speed-up {t_tl / t_ours:.1f}x, max |diff| {diff:.1e}, cells/forward {ours.provenance.settings['cells_per_forward']}")
    if attribution:
        t_atp, atp = timed(lambda: ti.patching.attribution(model, clean, corrupted, metric, progress=False), repeats)
        a, b = atp.values.flatten().double(), ref.flatten().double().cpu()
        r = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
        print(f"[{label}] attribution patching: {t_atp:.3f}s, speed-up vs TL exact {t_tl / t_atp:.1f}x, "
              f"Pearson r with exact {r:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    cfg = HookedTransformerConfig(n_layers=6, d_model=256, n_heads=8, d_head=32, d_mlp=1024, d_vocab=2000,
                                  n_ctx=64, act_fn="gelu_new", normalization_type="LN", seed=0)
    model = HookedTransformer(cfg).eval()
    g = torch.Generator().manual_seed(0)
    clean = torch.randint(0, 2000, (8, 16), generator=g)
    corrupted = clean.clone()
    corrupted[:, 5] = torch.randint(0, 2000, (8,), generator=g)
    metric = ti.metrics.logit_diff(torch.randint(0, 2000, (8,), generator=g), torch.randint(0, 2000, (8,), generator=g))
    compare("a: random 6L d256", model, clean, corrupted, metric, args.repeats)

    if not args.skip_real:
        model = ti.models.load("smollm2-135m")
        adapter = ti.models.adapt(model)
        # equal token lengths in every row, so TransformerLens sees unpadded inputs too
        pairs = [("January, February, March, April,", "June, July, August, September,", " May", " October"),
                 ("March, April, May, June,", "August, September, October, November,", " July", " December"),
                 ("one, two, three, four,", "five, six, seven, eight,", " five", " nine"),
                 ("two, three, four, five,", "four, five, six, seven,", " six", " eight")]
        clean = adapter.tokenize([p[0] for p in pairs])
        corrupted = adapter.tokenize([p[1] for p in pairs])
        if not torch.equal(clean.attention_mask, corrupted.attention_mask):
            raise SystemExit("benchmark pairs must tokenize to equal lengths")
        ids = lambda words: torch.tensor([adapter.tokenize(w, prepend_bos=False).tokens[0, 0] for w in words])  # noqa: E731
        metric = ti.metrics.logit_diff(ids([p[2] for p in pairs]), ids([p[3] for p in pairs]), positions=clean.last_index)
        if bool((clean.attention_mask == 0).any()):
            raise SystemExit("benchmark pairs should be unpadded so TransformerLens sees the same inputs")
        compare("b: SmolLM2-135M", model, clean.tokens, corrupted.tokens, metric, 1)


if __name__ == "__main__":
    main()
