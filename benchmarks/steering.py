"""Benchmark: the batched steering battery vs a prompt-by-prompt ``run_with_hooks`` loop.

Seed 003 evaluated steering one prompt, one vector and one scale at a time with
``model.run_with_hooks``. ``ti.steering.evaluate`` stacks every (vector, scale) along the
batch, starts at the steered layer, unembeds only the last token, and with
``positions="last"`` runs only the last position (the unsteered run's keys and values serve
the others). Both score the same battery (top-1 token and answer probability per prompt);
this prints both times, the ratio and the largest disagreement, measured in the same run,
for vectors added at every position and at the last one.

  (a) ordinal-4l: numbers-minus-months vectors at layers 1-3, 4 scales, the held-out
      analogy battery (~215 prompts);
  (b) SmolLM2-135M (``--real``): 2 layers x 3 scales x 24 month lists.

Run: python benchmarks/steering.py [--real] [--repeats N] [--threads T]
"""

import argparse
import warnings

import torch

warnings.filterwarnings("ignore")

import tl_interp as ti  # noqa: E402
from _timing import timed  # noqa: E402
from tl_interp import site  # noqa: E402
from tl_interp.steering import Controls  # noqa: E402

NO_CONTROLS = Controls(random_seeds=(), unrelated_prompts=())




def loop(model, vectors, prompts, answers, multipliers, positions):
    """The reference: one ``run_with_hooks`` per (vector, scale, prompt)."""
    top1 = torch.empty(len(vectors), len(multipliers), len(prompts), dtype=torch.long)
    prob = torch.empty(len(vectors), len(multipliers), len(prompts))
    tokens = [model.to_tokens(p) for p in prompts]
    with torch.no_grad():
        for i, v in enumerate(vectors):
            for k, m in enumerate(multipliers):
                def add(act, hook, vec=v.vector, m=m):
                    if positions == "last":
                        act[:, -1] += m * vec
                        return act
                    return act + m * vec

                for j, tok in enumerate(tokens):
                    logits = model.run_with_hooks(tok, fwd_hooks=[(v.hook_name, add)])[0, -1]
                    top1[i, k, j] = logits.argmax()
                    prob[i, k, j] = torch.softmax(logits, -1)[answers[j]]
    return top1, prob


def compare(label, model, vectors, tasks, multipliers, repeats, positions):
    prompts = [p for pairs in tasks.values() for p, _ in pairs]
    answers = [ti.steering.answer_token(model, a) for pairs in tasks.values() for _, a in pairs]
    (w_ref, c_ref), (top1, prob) = timed(lambda: loop(model, vectors, prompts, answers, multipliers, positions),
                                         repeats)
    (w_us, c_us), rep = timed(lambda: ti.steering.evaluate(model, tasks, vectors, multipliers, controls=NO_CONTROLS,
                                                           positions=positions, progress=False, n_boot=200), repeats)
    agree = float((rep.extras["pp_top1"] == top1).float().mean())
    diff = float((rep.extras["pp_prob"] - prob).abs().max())
    n = len(vectors) * len(multipliers) * len(prompts)
    print(f"[{label}, positions={positions!r}] {len(vectors)} vectors x {len(multipliers)} scales x {len(prompts)} "
          f"prompts = {n} runs: "
          f"run_with_hooks loop {w_ref:.2f}s wall / {c_ref:.2f}s CPU, batched evaluate {w_us:.2f}s wall / "
          f"{c_us:.2f}s CPU; speed-up {w_ref / w_us:.1f}x wall, {c_ref / c_us:.1f}x CPU; top-1 agreement "
          f"{agree:.4f}, max |d prob| {diff:.1e}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--real", action="store_true", help="also SmolLM2-135M (slower)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    from tl_interp.models.zoo.ordinal_data import analogy_tasks, paired_lists

    model = ti.models.load("ordinal-4l")
    pos, neg = paired_lists("train")
    vectors = [v.renamed(f"L{v.layer}") for v in
               ti.steering.contrast_vectors(model, pos, neg, [site("resid_pre", layer) for layer in (1, 2, 3)])]
    for positions in ("all", "last"):
        compare("a: ordinal-4l", model, vectors, analogy_tasks(("test", "heldout")), [1.0, 2.0, 4.0, 8.0],
                args.repeats, positions)

    if args.real:
        model = ti.models.load("smollm2-135m")
        numbers = "one two three four five six seven eight nine ten eleven twelve".split()
        months = "January February March April May June July August September October November December".split()
        pos = [", ".join(numbers[s:s + 3]) + "," for s in range(0, 8, 2)]
        neg = [", ".join(months[s:s + 3]) + "," for s in range(0, 8, 2)]
        vectors = [v.renamed(f"L{v.layer}") for v in
                   ti.steering.contrast_vectors(model, pos, neg, [site("resid_pre", layer) for layer in (10, 20)])]
        tasks = {"months": [(", ".join(months[s:s + n]) + ",", " " + numbers[s + n])
                            for n in (3, 4, 5) for s in range(8) if s + n < 12]}
        for positions in ("all", "last"):
            compare("b: SmolLM2-135M", model, vectors, {"months": tasks["months"][:24]}, [2.0, 4.0, 8.0], 1,
                    positions)


if __name__ == "__main__":
    main()
