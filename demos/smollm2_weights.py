# %% [markdown]
# # Static weight analyses of SmolLM2-135M (seed 002)
#
# Seed 002 reads a decision transformer's weights (processed by TransformerLens) without running
# it: norms of unembedding vectors, clustered cosine heatmaps of MLP neurons, "congruence" of
# neurons' output weights with the unembedding, top-k tokens per neuron, kurtosis. Here the same
# analyses run on SmolLM2-135M-Instruct with `ti.weights`, which reads every weight with layer
# norm folded as TransformerLens processes weights (and records whether they were processed).
#
# 1. Unembedding norms over the whole vocabulary; how the unembedding relates to the (tied)
#    embedding after processing.
# 2. Output congruence (W_out @ W_U) of every neuron of one MLP layer; the kurtosis of each
#    neuron's congruence over the vocabulary, against random directions of the same norm (a
#    neuron that writes to a few tokens has a heavy tail).
# 3. The most heavy-tailed neurons: their top and bottom tokens, a clustered cosine heatmap of
#    their output vectors, and the cluster around the most heavy-tailed one.
# 4. A direction orthogonalised against another (" yes" without " no"), and the neurons most
#    congruent with it; input congruence (W_E @ W_in) of the first layer's heavy-tailed neurons.
#
# Run: `python demos/smollm2_weights.py` (writes `results/smollm2_weights/`; 2-4 minutes on CPU,
# most of it loading the model).

# %%
import argparse
import json
import sys
import time
from pathlib import Path

import torch

import tl_interp as ti
from tl_interp import weights

sys.path.insert(0, str(Path(__file__).resolve().parent))  # demos/_shared/model_notes.py
from _shared.model_notes import weights_note  # noqa: E402


def tokens_of(model, words: list[str]) -> list[int]:
    ids = [model.to_tokens(w, prepend_bos=False)[0] for w in words]
    bad = [w for w, i in zip(words, ids) if len(i) != 1]
    if bad:
        raise ValueError(f"{bad} are not single tokens")
    return [int(i[0]) for i in ids]


def kurtosis_in_chunks(model, layer: int, kind: str, chunk: int = 256) -> torch.Tensor:
    """Each neuron's congruence kurtosis over the whole vocabulary, a chunk of neurons at a time."""
    starts = range(0, model.cfg.d_mlp, chunk)
    parts = [weights.congruence(model, layer, kind=kind, neurons=range(lo, min(lo + chunk, model.cfg.d_mlp)))
             .kurtosis() for lo in starts]
    return torch.cat(parts)


# %%
def main(results: Path, *, layer: int, n_neurons: int, n_random: int, seed: int) -> dict:
    start = time.time()
    model = ti.models.load("smollm2-135m")
    folded = weights.fold(model)
    found: dict = {"model": ti.models.adapt(model).model_id, "weights": folded.settings(), "layer": layer,
                   "d_vocab": model.cfg.d_vocab}

    # %% 1. unembedding norms; embedding vs unembedding
    unembed = weights.unembedding(model)
    norms = weights.norms(unembed)
    order = norms.values.argsort()
    found["unembedding_norms"] = {
        "median": float(norms.values.median()), "min": float(norms.values.min()), "max": float(norms.values.max()),
        "largest": [(unembed.labels[i], round(float(norms.values[i]), 3)) for i in order.flip(0)[:10].tolist()],
        "smallest": [(unembed.labels[i], round(float(norms.values[i]), 3)) for i in order[:10].tolist()]}
    embed = weights.embedding(model)
    tied = torch.nn.functional.cosine_similarity(embed.matrix, unembed.matrix, dim=1)
    found["embedding_vs_unembedding_cosine"] = {"median": float(tied.median()), "min": float(tied.min())}

    # %% 2. output congruence of every neuron of the layer, and its kurtosis against random directions
    kurt = kurtosis_in_chunks(model, layer, "out")
    g = torch.Generator().manual_seed(seed)
    w_out = folded.mlp_out(layer)
    random_dirs = torch.randn(n_random, model.cfg.d_model, generator=g, dtype=torch.float64)
    random_dirs = random_dirs / random_dirs.norm(dim=1, keepdim=True) * w_out.norm(dim=1).median()
    random_kurt = weights.kurtosis(random_dirs @ folded.unembed(), dim=1)
    found["kurtosis"] = {"neurons_median": float(kurt.median()), "neurons_max": float(kurt.max()),
                         "random_median": float(random_kurt.median()), "random_max": float(random_kurt.max()),
                         "neurons_above_random_max": int((kurt > random_kurt.max()).sum()),
                         "n_neurons": int(kurt.numel()), "n_random": n_random, "seed": seed}

    # %% 3. the most heavy-tailed neurons: top/bottom tokens, clustered cosines, a cluster around the first
    chosen = kurt.argsort(descending=True)[:n_neurons].tolist()
    table = weights.congruence(model, layer, neurons=chosen)
    top = table.top(8, absolute=False).by_row()
    bottom = table.top(8, absolute=False, largest=False).by_row()
    rows = list(top)
    found["heavy_tailed_neurons"] = [
        {"neuron": row, "kurtosis": round(float(kurt[c]), 1), "top": list(top[row].labels),
         "bottom": list(bottom[row].labels)} for row, c in zip(rows, chosen)]
    out_vectors = weights.mlp_out(model, layer).select(chosen)
    cosines = weights.cosine_matrix(out_vectors)
    diagonal = torch.eye(len(chosen), dtype=torch.bool)
    i, j = divmod(int(cosines.matrix.masked_fill(diagonal, 0.0).abs().argmax()), len(chosen))
    found["heavy_tailed_cosines"] = {
        "mean_abs": float(cosines.matrix[~diagonal].abs().mean()),
        "closest_pair": [out_vectors.labels[i], out_vectors.labels[j], round(float(cosines.matrix[i, j]), 3)],
        "order": list(cosines.ordered_labels)}
    columns = list(dict.fromkeys(t for row in top.values() for t in row.columns["index"][:3]))
    found["_figure_rows"], found["_figure_columns"] = rows, columns
    exemplar = rows[0]
    around = weights.cluster_around(weights.mlp_out(model, layer), exemplar, threshold=0.3)
    members = [(label, round(float(c), 3)) for label, c in zip(around.labels, around.cosines)]
    found["cluster_around"] = {"exemplar": exemplar, "threshold": 0.3, "members": members[:12]}

    # %% 4. " yes" without " no"; input congruence of the first layer
    yes, no = tokens_of(model, [" yes", " no"])
    w_u = folded.unembed()
    yes_not_no = weights.orthogonalize(w_u[:, yes], w_u[:, no])
    along = w_out @ yes_not_no / yes_not_no.norm()
    best = along.argsort(descending=True)[:5].tolist()
    cos_yes_no = torch.nn.functional.cosine_similarity(w_u[:, yes], w_u[:, no], dim=0)
    found["yes_not_no"] = {"cos_yes_no": float(cos_yes_no),
                           "orthogonal_check": float(yes_not_no @ w_u[:, no]),
                           "top_neurons": [(f"L{layer}N{i}", round(float(along[i]), 3)) for i in best]}
    in_kurt = kurtosis_in_chunks(model, 0, "in")
    first = in_kurt.argsort(descending=True)[:3].tolist()
    inputs = weights.congruence(model, 0, kind="in", neurons=first).top(8, absolute=False).by_row()
    found["layer0_input_congruence"] = [{"neuron": row, "kurtosis": round(float(in_kurt[f]), 1),
                                         "top_tokens": list(inputs[row].labels)} for row, f in zip(inputs, first)]
    found["seconds"] = round(time.time() - start, 1)
    write(results, found, cosines, table)
    return {**found, "result": cosines}


# %%
def word_families(neurons: list[dict]) -> list[str]:
    """Neurons whose top tokens are one word in several spellings (' her', 'Her', ...): 3+ share a form."""
    out = []
    for n in neurons:
        forms = [t.strip().lower() for t in n["top"]]
        common = max(set(forms), key=forms.count)
        if common and forms.count(common) >= 3:
            out.append(f"{n['neuron']} ({', '.join(repr(t) for t in n['top'][:4])})")
    return out


def summary_text(found: dict) -> str:
    """``summary.md`` from the numbers in ``summary.json`` alone (so it can be checked without a run)."""
    k, un, w = found["kurtosis"], found["unembedding_norms"], found["weights"]
    layer = found["layer"]
    lines = [
        "# Static weight analyses of SmolLM2-135M-Instruct",
        "",
        f"Generated by `demos/smollm2_weights.py` in {found['seconds']} s (tl_interp {ti.__version__}). Weights "
        f"{'were' if w['weights_processed'] else 'were not'} processed by TransformerLens at load "
        f"(normalization {w['normalization_type']}); every product below reads them with layer norm folded.",
        "",
        weights_note(["smollm2-135m"]),
        "",
        "## Headline",
        "",
        f"- The typical layer-{layer} neuron writes to the vocabulary about as evenly as a random direction: the "
        f"median kurtosis of a neuron's output congruence (W_out @ W_U over {found['d_vocab']} tokens) is "
        f"{k['neurons_median']:.1f}, against {k['random_median']:.1f} for {k['n_random']} random directions of the "
        f"same norm. The tail is different: {k['neurons_above_random_max']} of {k['n_neurons']} neurons exceed the "
        f"largest random kurtosis ({k['random_max']:.1f}), the most extreme reaching {k['neurons_max']:.0f}.",
        f"- Among the {len(found['heavy_tailed_neurons'])} most heavy-tailed neurons, these write one word in "
        f"several spellings: {'; '.join(word_families(found['heavy_tailed_neurons'])) or 'none'}. Others write "
        "punctuation families (closing brackets, quotes) or word pieces.",
        f"- Their output vectors mostly point in different directions (mean |cosine| "
        f"{found['heavy_tailed_cosines']['mean_abs']:.2f}), with near-duplicates: the closest pair is "
        f"{found['heavy_tailed_cosines']['closest_pair'][0]} and {found['heavy_tailed_cosines']['closest_pair'][1]} "
        f"(cosine {found['heavy_tailed_cosines']['closest_pair'][2]:+.2f}).",
        f"- Unembedding norms range from {un['min']:.2f} to {un['max']:.2f} (median {un['median']:.2f}).",
        "",
        f"## Most heavy-tailed neurons of layer {layer}: tokens they write most and least",
        "",
        "| neuron | kurtosis | top tokens | bottom tokens |",
        "|---|---|---|---|",
    ]
    lines += [f"| {n['neuron']} | {n['kurtosis']} | {', '.join(map(repr, n['top']))} | "
              f"{', '.join(map(repr, n['bottom']))} |" for n in found["heavy_tailed_neurons"]]
    ca = found["cluster_around"]
    lines += ["", f"Neurons whose output vector has |cosine| >= {ca['threshold']} with {ca['exemplar']}: "
              + ", ".join(f"{lab} ({c:+.2f})" for lab, c in ca["members"]) + ".", "",
              "## Unembedding", "",
              "Largest norms: " + ", ".join(f"{t!r} {v}" for t, v in un["largest"]) + ".",
              "Smallest norms: " + ", ".join(f"{t!r} {v}" for t, v in un["smallest"]) + ".", "",
              f"SmolLM2 ties its embedding and unembedding; after processing (ln_final's gain folded into W_U, W_U "
              f"centred over the vocabulary) the cosine between a token's embedding and unembedding vectors has "
              f"median {found['embedding_vs_unembedding_cosine']['median']:.3f} (minimum "
              f"{found['embedding_vs_unembedding_cosine']['min']:.3f}).", ""]
    yn = found["yes_not_no"]
    lines += ["## A direction orthogonalised against another", "",
              f"cos(W_U[' yes'], W_U[' no']) = {yn['cos_yes_no']:.3f}. ' yes' orthogonalised against ' no' "
              f"(its dot product with ' no' is now {yn['orthogonal_check']:.1e}); the layer-{layer} neurons writing "
              "most along it: " + ", ".join(f"{n} ({v:+.3f})" for n, v in yn["top_neurons"]) + ".", "",
              "## Input congruence of layer 0 (W_E @ W_in, gate excluded)", ""]
    lines += [f"- {n['neuron']} (kurtosis {n['kurtosis']}): driven most by {', '.join(map(repr, n['top_tokens']))}"
              for n in found["layer0_input_congruence"]]
    lines += ["", "## Not found / caveats", "",
              "- Congruence is a direct-path, per-unit-activation quantity: it ignores how often a neuron fires "
              "and everything downstream of it (later layers, the final norm's per-token scale).",
              "- SmolLM2's MLP is gated (SiLU(x W_gate) * (x W_in)); input congruence with W_in alone is half of "
              "what drives a neuron (`congruence(kind='gate')` gives the other half).",
              f"- Figures: [figures.html](figures.html) (plotly from its CDN): the clustered cosine heatmap of the "
              f"{len(found['heavy_tailed_neurons'])} neurons and their congruence with their top tokens.",
              "- Kurtosis ranks neurons by the tail of their whole congruence distribution; a neuron with a few "
              "strong tokens and a large negative tail ranks high too (several above)."]
    return "\n".join(lines) + "\n"


def write(results: Path, found: dict, cosines, table) -> None:
    from tl_interp.viz.figures import heatmap

    results.mkdir(parents=True, exist_ok=True)
    rows, columns = found.pop("_figure_rows"), found.pop("_figure_columns")
    layer = found["layer"]
    (results / "summary.md").write_text(summary_text(found))
    (results / "summary.json").write_text(json.dumps(found, indent=1) + "\n")
    picked = table.values[:, columns]
    labels = [table.labels["d_vocab"][c] for c in columns]
    figures = [cosines.figure(title=f"cosine of heavy-tailed layer-{layer} neurons' output vectors (clustered)"),
               heatmap(picked, x_labels=[repr(t) for t in labels], y_labels=rows, x_title="token", y_title="neuron",
                       title="output congruence W_out @ W_U of the same neurons with their top-3 tokens",
                       colorbar="congruence")]
    html = [fig.to_html(full_html=False, include_plotlyjs="cdn" if i == 0 else False) for i, fig in enumerate(figures)]
    (results / "figures.html").write_text("<html><body>" + "\n".join(html) + "</body></html>\n")


# %%
if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", type=Path, default=Path(__file__).resolve().parents[1] / "results" /
                        "smollm2_weights")
    parser.add_argument("--layer", type=int, default=29)
    parser.add_argument("--neurons", type=int, default=16)
    parser.add_argument("--random", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out = main(args.results, layer=args.layer, n_neurons=args.neurons, n_random=args.random, seed=args.seed)
    print((args.results / "summary.md").read_text())

# %% [markdown]
# In a notebook the clustered cosine matrix of the chosen neurons' output vectors displays itself.

# %%
if __name__ == "__main__":
    ti.viz.show(out["result"])

