# %% [markdown]
# # Chosen vs rejected answers: a shift or a rotation of the hidden states? (SmolLM2-135M, seed 000)
#
# Seed 000 asks, on DPO chosen/rejected pairs, whether the hidden states of a rejected response
# are better described as the chosen ones plus one mean shift (a "steering direction") or as a
# rotation of them, and whether the per-pair geometry tracks how much more likely the model
# finds the chosen response. Here the question runs on SmolLM2-135M-Instruct with pairs written
# for this demo: a question, a correct answer (chosen) and a subtly wrong one (rejected) that
# differ in a word or a number.
#
# - States: `ti.collect` reads the residual stream after every block, averaged over each
#   response's tokens only (a per-row mask; the question's tokens are left out).
# - Score: the log-prob ratio, mean log-probability per response token of the chosen answer
#   minus that of the rejected one (computed from the same model).
# - `ti.geometry.paired`: shift / rotation / both fits with re-paired baselines (unrelated
#   pairs), per-pair cosines and angles, Pearson/Spearman/Kendall of the cosine with the score
#   with permutation p-values (Bonferroni over layers here), PCA of the differences.
#
# Run: `python demos/paired_states_smollm2.py` (writes `results/paired_states_smollm2/`; 1-3
# minutes on CPU, most of it loading the model).

# %%
import argparse
import json
import sys
import time
from pathlib import Path

import torch

import tl_interp as ti
from tl_interp import geometry, site

sys.path.insert(0, str(Path(__file__).resolve().parent))  # demos/_shared/model_notes.py
from _shared.model_notes import weights_note  # noqa: E402

PAIRS = [
    ("What is the capital of France?", "The capital of France is Paris.", "The capital of France is Lyon."),
    ("What is 7 times 8?", "7 times 8 is 56.", "7 times 8 is 54."),
    ("How many legs does a spider have?", "A spider has eight legs.", "A spider has six legs."),
    ("What is the boiling point of water at sea level?", "Water boils at 100 degrees Celsius.",
     "Water boils at 90 degrees Celsius."),
    ("Which planet is closest to the Sun?", "Mercury is the closest planet to the Sun.",
     "Venus is the closest planet to the Sun."),
    ("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare.",
     "Romeo and Juliet was written by Charles Dickens."),
    ("What is the largest ocean on Earth?", "The Pacific is the largest ocean.", "The Atlantic is the largest ocean."),
    ("How many days are in a leap year?", "A leap year has 366 days.", "A leap year has 365 days."),
    ("What gas do plants absorb from the air?", "Plants absorb carbon dioxide.", "Plants absorb nitrogen."),
    ("What is the square root of 81?", "The square root of 81 is 9.", "The square root of 81 is 8."),
    ("What is the chemical symbol for gold?", "The chemical symbol for gold is Au.",
     "The chemical symbol for gold is Ag."),
    ("How many continents are there?", "There are seven continents.", "There are five continents."),
    ("What is the freezing point of water in Fahrenheit?", "Water freezes at 32 degrees Fahrenheit.",
     "Water freezes at 0 degrees Fahrenheit."),
    ("Which animal is known as the king of the jungle?", "The lion is known as the king of the jungle.",
     "The tiger is known as the king of the jungle."),
    ("What is 15 plus 27?", "15 plus 27 is 42.", "15 plus 27 is 43."),
    ("What color do you get by mixing blue and yellow?", "Mixing blue and yellow gives green.",
     "Mixing blue and yellow gives purple."),
    ("How many sides does a hexagon have?", "A hexagon has six sides.", "A hexagon has eight sides."),
    ("What is the tallest mountain in the world?", "Mount Everest is the tallest mountain.",
     "Mount Kilimanjaro is the tallest mountain."),
    ("Which organ pumps blood through the body?", "The heart pumps blood through the body.",
     "The liver pumps blood through the body."),
    ("What is the capital of Japan?", "The capital of Japan is Tokyo.", "The capital of Japan is Osaka."),
    ("How many minutes are in an hour?", "There are 60 minutes in an hour.", "There are 100 minutes in an hour."),
    ("What is the main language spoken in Brazil?", "The main language of Brazil is Portuguese.",
     "The main language of Brazil is Spanish."),
    ("What is 100 divided by 4?", "100 divided by 4 is 25.", "100 divided by 4 is 20."),
    ("Which metal is liquid at room temperature?", "Mercury is liquid at room temperature.",
     "Iron is liquid at room temperature."),
    ("What do bees make?", "Bees make honey.", "Bees make milk."),
    ("How many hours are in a day?", "A day has 24 hours.", "A day has 12 hours."),
    ("What is the largest planet in our solar system?", "Jupiter is the largest planet.",
     "Saturn is the largest planet."),
    ("In which season do leaves fall from trees?", "Leaves fall from trees in autumn.",
     "Leaves fall from trees in spring."),
    ("What is the opposite of hot?", "The opposite of hot is cold.", "The opposite of hot is warm."),
    ("How many wheels does a bicycle have?", "A bicycle has two wheels.", "A bicycle has three wheels."),
    ("What is the capital of Italy?", "The capital of Italy is Rome.", "The capital of Italy is Milan."),
    ("What is 9 minus 4?", "9 minus 4 is 5.", "9 minus 4 is 6."),
    ("Which bird is a symbol of peace?", "The dove is a symbol of peace.", "The crow is a symbol of peace."),
    ("What do cows drink?", "Cows drink water.", "Cows drink milk."),
    ("How many strings does a standard guitar have?", "A standard guitar has six strings.",
     "A standard guitar has four strings."),
    ("What is the hardest natural substance?", "Diamond is the hardest natural substance.",
     "Gold is the hardest natural substance."),
    ("Which direction does the sun rise in?", "The sun rises in the east.", "The sun rises in the west."),
    ("How many months have 28 days?", "All twelve months have at least 28 days.",
     "Only February has at least 28 days."),
    ("What is the capital of Germany?", "The capital of Germany is Berlin.", "The capital of Germany is Munich."),
    ("What is 12 squared?", "12 squared is 144.", "12 squared is 124."),
]


def chat(question: str) -> str:
    return f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"


def response_batch(model, prompts: list[str], responses: list[str]):
    """Tokens of prompt + response, the mask of each response's tokens, and their log-probabilities."""
    adapter = ti.models.adapt(model)
    batch = adapter.tokenize([p + r for p, r in zip(prompts, responses)])
    response = torch.zeros_like(batch.attention_mask, dtype=torch.bool)
    for i, prompt in enumerate(prompts):
        head = adapter.tokenize(prompt).tokens[0]
        if not torch.equal(batch.tokens[i, :len(head)], head):
            raise ValueError(f"pair {i}: the prompt's tokens change when the response is appended")
        response[i, len(head):int(batch.last_index[i]) + 1] = True
    with torch.no_grad():
        logits = model(batch.tokens, attention_mask=batch.attention_mask)
    logp = logits.log_softmax(-1)[:, :-1].gather(-1, batch.tokens[:, 1:, None])[..., 0]
    per_token = torch.where(response[:, 1:], logp, torch.zeros_like(logp))
    return batch, response, per_token.sum(1) / response[:, 1:].sum(1)


# %%
def main(results: Path, *, n_pairs: int, n_permutations: int, seed: int) -> dict:
    start = time.time()
    model = ti.models.load("smollm2-135m")
    pairs = PAIRS[:n_pairs]
    prompts = [chat(q) for q, _, _ in pairs]
    where = [site("resid_post", layer) for layer in range(model.cfg.n_layers)]
    states, logp = {}, {}
    for side, column in (("chosen", 1), ("rejected", 2)):
        batch, response, logp[side] = response_batch(model, prompts, [p[column] for p in pairs])
        collected = ti.collect(model, batch, where, positions=response, reduce="mean", progress=False)
        states[side] = collected.stack()
    score = (logp["chosen"] - logp["rejected"]).double()
    g = geometry.paired(states["chosen"], states["rejected"], score=score, n_permutations=n_permutations, seed=seed,
                        model_id=collected.model_id, progress=False)
    layers = len(where)
    spearman_corrected = ti.stats.correct(g.correlation_p_value("spearman"), "bonferroni",
                                          n_permutations=n_permutations)
    found: dict = {
        "model": collected.model_id, "n_pairs": len(pairs), "n_layers": layers, "seed": seed,
        "d_model": model.cfg.d_model,
        "n_permutations": n_permutations, "site": "resid_post, mean over response tokens",
        "logprob_ratio": {"mean": float(score.mean()), "positive": int((score > 0).sum())},
        "per_layer": {key: [round(float(v), 4) for v in value] for key, value in {
            "shift_residual": g.shift_residual, "rotation_residual": g.rotation_residual,
            "shift_rotation_residual": g.shift_rotation_residual,
            "baseline_shift": g.baseline("shift"), "baseline_rotation": g.baseline("rotation"),
            "baseline_shift_rotation": g.baseline("shift_rotation"),
            "p_shift": g.p_value("shift"), "p_rotation": g.p_value("rotation"),
            "p_shift_rotation": g.p_value("shift_rotation"), "improvement": g.improvement,
            "mean_cosine": g.mean_cosine, "spearman": g.correlation("spearman"),
            "pearson": g.correlation("pearson"), "kendall": g.correlation("kendall"),
            "p_spearman": g.correlation_p_value("spearman"), "p_spearman_bonferroni": spearman_corrected,
            "pca_explained": g.pca_explained, "baseline_pca_explained": g.baseline_pca_explained,
            "p_pca": g.pca_p_value}.items()}}
    found["pca_k"] = g.provenance.settings["k"]
    found["seconds"] = round(time.time() - start, 1)
    write(results, found, g)
    return {**found, "result": g}


# %%
def _layers(mask) -> str:
    """Layers where ``mask`` holds, as compact ranges ("0-12, 15"); "all N" or "none"."""
    chosen = [i for i, m in enumerate(mask) if m]
    if not chosen:
        return "none"
    if len(chosen) == len(mask):
        return f"all {len(mask)}"
    runs, start = [], chosen[0]
    for prev, cur in zip(chosen, chosen[1:] + [None]):
        if cur != prev + 1:
            runs.append(f"{start}-{prev}" if prev > start else str(start))
            start = cur
    return ", ".join(runs)


def summary_text(found: dict) -> str:
    """``summary.md`` from the numbers in ``summary.json`` alone (so it can be checked without a run)."""
    pl, layers = found["per_layer"], found["n_layers"]
    # results written before "pca_k" was stored used geometry.paired's default k
    k = found.get("pca_k", min(5, min(found["n_pairs"], found["d_model"]) - 1))
    rotation_better = [r < s for r, s in zip(pl["rotation_residual"], pl["shift_residual"])]
    pairing_rotation = [p <= 0.05 / layers for p in pl["p_rotation"]]
    pairing_shift = [p <= 0.05 / layers for p in pl["p_shift"]]
    corr_sig = [p <= 0.05 for p in pl["p_spearman_bonferroni"]]
    pca_sig = [p <= 0.05 / layers for p in pl["p_pca"]]
    best = max(range(layers), key=lambda i: abs(pl["spearman"][i]))
    mid = layers // 2
    lines = [
        "# Chosen vs rejected answers in SmolLM2-135M-Instruct: shift or rotation?",
        "",
        f"Generated by `demos/paired_states_smollm2.py` in {found['seconds']} s (tl_interp {ti.__version__}). "
        f"{found['n_pairs']} question / correct answer / subtly wrong answer triples; states: {found['site']}, "
        f"{layers} layers; score: the log-prob ratio (mean log-prob per response token, chosen minus rejected), "
        f"positive for {found['logprob_ratio']['positive']} of {found['n_pairs']} pairs (mean "
        f"{found['logprob_ratio']['mean']:+.2f} nats). Baselines re-pair chosen and rejected states at random "
        f"({found['n_permutations']} permutations, seed {found['seed']}); p-values are one-sided (true pairing fits "
        f"better) and compared with 0.05/{layers} (Bonferroni over layers).",
        "",
        weights_note(["smollm2-135m"]),
        "",
        "## Headline",
        "",
        f"- **Shift vs rotation**: a rotation of the chosen states leaves less unexplained than one mean shift at "
        f"{sum(rotation_better)} of {layers} layers (e.g. layer {mid}: relative residual rotation "
        f"{pl['rotation_residual'][mid]:.3f} vs shift {pl['shift_residual'][mid]:.3f}; rotation and shift together "
        f"{pl['shift_rotation_residual'][mid]:.3f}). But with {found['n_pairs']} pairs in {found['d_model']} dimensions a rotation "
        f"also fits *unrelated* pairs: re-paired, its residual is {pl['baseline_rotation'][mid]:.3f} at layer {mid} "
        f"(shift {pl['baseline_shift'][mid]:.3f}). Relative to a shift, a rotation removes "
        f"{pl['improvement'][mid]:.0%} of the residual for true pairs and "
        f"{1 - pl['baseline_rotation'][mid] / pl['baseline_shift'][mid]:.0%} for unrelated ones.",
        f"- **Does the pairing matter?** The true pairing beats re-paired states (corrected) for the shift (layers: "
        f"{_layers(pairing_shift)}) and for the rotation (layers: {_layers(pairing_rotation)})"
        + (f" (with {found['n_permutations']} permutations the smallest possible p, "
           f"{1 / (found['n_permutations'] + 1):.2g}, is above 0.05/{layers}: too few to tell)."
           if 1 / (found["n_permutations"] + 1) > 0.05 / layers else "."),
        f"- **Cosine vs log-prob ratio**: {'no' if not any(corr_sig) else 'a'} significant correlation after "
        f"correction (layers: {_layers(corr_sig)}). The Spearman correlation of the per-pair cosine with the "
        f"log-prob ratio is largest in magnitude at layer {best} (rho = {pl['spearman'][best]:+.2f}, permutation p "
        f"= {pl['p_spearman'][best]:.3g}, Bonferroni-corrected {pl['p_spearman_bonferroni'][best]:.3g}).",
        f"- **Do the differences concentrate in a few directions?** The top {k} principal components of the "
        f"chosen - rejected differences hold more variance than for re-paired states (corrected; layers: "
        f"{_layers(pca_sig)}); they hold *less* at {sum(a < b for a, b in zip(pl['pca_explained'], pl['baseline_pca_explained']))} "
        f"of {layers} layers (layer {mid}: {pl['pca_explained'][mid]:.2f} vs {pl['baseline_pca_explained'][mid]:.2f}): "
        "presumably because the differences of unrelated pairs mix different questions, which a few directions "
        "dominate, while a correct and a wrong answer to the same question differ in many small ways.",
        "",
        "## Per layer",
        "",
        "| layer | shift | (re-paired) | rotation | (re-paired) | both | mean cos | Spearman | p | "
        f"PCA top-{k} | (re-paired) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for i in range(layers):
        lines.append(f"| {i} | {pl['shift_residual'][i]:.3f} | {pl['baseline_shift'][i]:.3f} | "
                     f"{pl['rotation_residual'][i]:.3f} | {pl['baseline_rotation'][i]:.3f} | "
                     f"{pl['shift_rotation_residual'][i]:.3f} | {pl['mean_cosine'][i]:.4f} | "
                     f"{pl['spearman'][i]:+.2f} | {pl['p_spearman'][i]:.3g} | {pl['pca_explained'][i]:.2f} | "
                     f"{pl['baseline_pca_explained'][i]:.2f} |")
    lines += ["", "Residuals are relative: ||B - fit(A)|| / ||B - mean(B)|| (B rejected, A chosen).", "",
              "## Not found / caveats", "",
              "- Chosen and rejected answers share the question and most words, so their states are nearly "
              "identical (mean cosines near 1); the geometry is of small differences.",
              f"- {found['n_pairs']} pairs are far fewer than the {found['d_model']} dimensions: the rotation can fit "
              "anything, which is why only the comparison with re-paired states is evidence.",
              "- Seed 000's CCA of the differences against the score is not reported: with fewer pairs than "
              "dimensions a CCA against one score is an exact (overfit) regression.",
              "- One model, one hand-written set of pairs; no DPO training.",
              "- Figures: [figures.html](figures.html) (plotly from its CDN): per-layer lines and the angle "
              f"histogram at layer {best}."]
    return "\n".join(lines) + "\n"


def write(results: Path, found: dict, g) -> None:
    results.mkdir(parents=True, exist_ok=True)
    best = max(range(found["n_layers"]), key=lambda i: abs(found["per_layer"]["spearman"][i]))
    (results / "summary.md").write_text(summary_text(found))
    (results / "summary.json").write_text(json.dumps(found, indent=1) + "\n")
    figures = [g.figure(), g.angle_histogram(best)]
    html = [f.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False) for i, f in enumerate(figures)]
    (results / "figures.html").write_text("<html><body>" + "\n".join(html) + "</body></html>\n")


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results" /
                        "paired_states_smollm2")
    parser.add_argument("--pairs", type=int, default=len(PAIRS))
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = main(args.results, n_pairs=args.pairs, n_permutations=args.permutations, seed=args.seed)
    print((args.results / "summary.md").read_text())

# %% [markdown]
# In a notebook the paired-geometry result displays itself.

# %%
if __name__ == "__main__":
    ti.viz.show(out["result"])

