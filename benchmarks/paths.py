"""Benchmark: ti.patching.paths (many senders per stacked pass) vs one forward pass per sender.

The reference is what a TransformerLens user writes by hand: cache the clean and corrupted runs,
then for every (sender, receiver set) run the model once with ``run_with_hooks``, the receivers'
inputs overwritten by the base input plus the sender's change of output (the IOI paper's path
patching with everything else frozen). Both sides are timed in the same run, including their
caching runs, and the max |diff| of their values is printed:
  (a) ordinal-4l: every head and MLP below layer 3 as a sender, into the logits and into each of layer 3's
      queries;
  (b) SmolLM2-135M (skip with --skip-real): the 90 heads of layers 10-19 into the logits and
      into layer 20's queries, on the months task.

Run: python benchmarks/paths.py [--skip-real] [--repeats N]
"""

import argparse
import warnings

import torch

warnings.filterwarnings("ignore")

import tl_interp as ti  # noqa: E402
from _timing import timed  # noqa: E402

FLAGS = ("use_split_qkv_input", "use_hook_mlp_in", "ungroup_grouped_query_attention")


def loop(model, base, source, metric, senders, receivers):
    """One ``run_with_hooks`` per (sender, receiver set): receivers are ``"logits"`` or a list of
    (layer, head) query inputs; senders (layer, head) or ("mlp", layer)."""
    saved = {f: getattr(model.cfg, f) for f in FLAGS}
    model.cfg.use_split_qkv_input = True
    try:
        with torch.inference_mode():
            _, base_cache = model.run_with_cache(base)
            _, source_cache = model.run_with_cache(source)
            out = torch.empty(len(senders), len(receivers))
            for i, s in enumerate(senders):
                if s[0] == "mlp":
                    name = f"blocks.{s[1]}.hook_mlp_out"
                    delta = source_cache[name] - base_cache[name]
                else:
                    name, w_o = f"blocks.{s[0]}.attn.hook_z", model.blocks[s[0]].attn.W_O[s[1]]
                    delta = (source_cache[name][:, :, s[1]] - base_cache[name][:, :, s[1]]) @ w_o
                for j, r in enumerate(receivers):
                    if r == "logits":
                        last = f"blocks.{model.cfg.n_layers - 1}.hook_resid_post"
                        hooks = [(last, lambda x, hook: base_cache[hook.name] + delta)]
                    else:
                        layer = r[0][0]

                        def overwrite(x, hook, heads=[h for _, h in r], layer=layer):
                            x = x.clone()
                            x[:, :, heads] = (base_cache[f"blocks.{layer}.hook_resid_pre"] + delta)[:, :, None]
                            return x

                        hooks = [(f"blocks.{layer}.hook_q_input", overwrite)]
                    out[i, j] = metric(model.run_with_hooks(base, fwd_hooks=hooks))
        return out
    finally:
        for f, v in saved.items():
            setattr(model.cfg, f, v)


def compare(label, model, clean, corrupted, metric, senders, receivers, repeats):
    ours_receivers = ["logits" if r == "logits" else {(layer, h, "q") for layer, h in r} for r in receivers]
    with torch.inference_mode():
        model(clean)  # warm-up
    (w_loop, c_loop), ref = timed(lambda: loop(model, clean, corrupted, metric, senders, receivers), repeats)
    (w_us, c_us), ours = timed(lambda: ti.patching.paths(model, clean, corrupted, metric, senders=senders,
                                                         receivers=ours_receivers, progress=False), repeats)
    diff = (ours.values - ref).abs().max().item()
    cells = ours.values.numel()
    settings = ours.provenance.settings
    print(f"[{label}] {len(senders)} senders x {len(receivers)} receiver sets ({cells} cells, batch "
          f"{tuple(clean.shape)}): loop of forwards {w_loop:.2f}s wall / {c_loop:.2f}s CPU, tl_interp {w_us:.2f}s "
          f"wall / {c_us:.2f}s CPU; speed-up {w_loop / w_us:.1f}x wall, {c_loop / c_us:.1f}x CPU; "
          f"max |diff| {diff:.1e}; {settings['passes']} stacked passes")
    print(f"[{label}]   fast paths: {', '.join(f'{k} {v}' for k, v in settings['engine'].items())}")


def tokens_of(model, prompts):
    batch = ti.models.adapt(model).tokenize(prompts)
    if batch.padded:
        raise SystemExit("benchmark prompts must tokenize to one length (the loop sees unpadded inputs)")
    return batch.tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--skip-real", action="store_true")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 keeps timings steady on a shared machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")

    from tl_interp.models.zoo.ordinal import ordinal_tasks

    model = ti.models.load("ordinal-4l")
    adapter = ti.models.adapt(model)
    pairs = [(p, a) for p, a in ordinal_tasks("heldout")["months_sentence"] if p.endswith("is followed by")]
    clean = tokens_of(model, [p for p, _ in pairs])
    corrupted = tokens_of(model, [pairs[(i + 6) % len(pairs)][0] for i in range(len(pairs))])
    answer = adapter.tokenize([a for _, a in pairs], prepend_bos=False).tokens[:, 0]
    metric = ti.metrics.logit_diff(answer, answer.roll(-6))
    cfg = model.cfg
    senders = [(layer, h) for layer in range(cfg.n_layers - 1) for h in range(cfg.n_heads)]
    senders += [("mlp", layer) for layer in range(cfg.n_layers - 1)]
    receivers = ["logits"] + [[(cfg.n_layers - 1, h)] for h in range(cfg.n_heads)]
    compare("a: ordinal-4l", model, clean, corrupted, metric, senders, receivers, args.repeats)

    if not args.skip_real:
        model = ti.models.load("smollm2-135m")
        adapter = ti.models.adapt(model)
        clean = tokens_of(model, ["January, February, March,", "March, April, May,", "May, June, July,",
                                  "August, September, October,"])
        corrupted = tokens_of(model, ["June, July, August,", "August, September, October,", "October, November, December,",
                                      "January, February, March,"])
        ids = [adapter.tokenize(w, prepend_bos=False).tokens[0, 0] for w in (" April", " June", " August", " November")]
        wrong = [adapter.tokenize(w, prepend_bos=False).tokens[0, 0] for w in (" September", " November", " January", " April")]
        metric = ti.metrics.logit_diff(torch.stack(ids), torch.stack(wrong))
        senders = [(layer, h) for layer in range(10, 20) for h in range(model.cfg.n_heads)]
        compare("b: SmolLM2-135M", model, clean, corrupted, metric, senders, ["logits", [(20, h) for h in range(9)]], 1)


if __name__ == "__main__":
    main()
