"""Patching finds where ordinal-4l moves the item and writes the answer (a known mechanism).

Measured (see the closing note): on the held-out template "<month> is followed by", the
clean month's identity sits at the item position entering layer 0 and at the final position
from layer 1 on -- layer-0 attention moves it -- and patching layer 0's MLP output at the final
position alone recovers almost all of the logit difference: MLP 0 writes the successor.
"""

import torch

import tl_interp as ti
from tl_interp.models.zoo.ordinal import ordinal_tasks


def test_patching_localises_the_successor_computation_on_ordinal_4l() -> None:
    model = ti.models.load("ordinal-4l")
    adapter = ti.models.adapt(model)
    pairs = [(p, a) for p, a in ordinal_tasks("heldout")["months_sentence"] if p.endswith("is followed by")]
    clean = [p for p, _ in pairs]
    corrupted = [pairs[(i + 3) % len(pairs)][0] for i in range(len(pairs))]
    answer = adapter.tokenize([a for _, a in pairs], prepend_bos=False).tokens[:, 0]
    wrong = answer.roll(-3)
    c, x = adapter.tokenize(clean), adapter.tokenize(corrupted)
    metric = ti.metrics.logit_diff(answer, wrong, positions=c.last_index)
    resid = ti.patching.sweep(model, c.tokens, x.tokens, metric, progress=False).normalized
    item, last = 1, int(c.last_index[0])
    assert resid[0, item] > 0.95 and resid[0, last].abs() < 0.05   # entering layer 0: at the item
    assert (resid[1:, last] > 0.95).all() and (resid[1:, item].abs() < 0.05).all()  # after: at the end
    mlp = ti.patching.sweep(model, c.tokens, x.tokens, metric, site="mlp_out", progress=False).normalized
    assert mlp[0, last] > 0.8 and mlp[0, last] == mlp.max()
    heads = ti.patching.sweep(model, c.tokens, x.tokens, metric, site="z", progress=False).normalized
    assert heads[0].sum() > 0.5 and heads[1:].abs().max() < 0.05  # only layer-0 heads move it
    assert torch.isfinite(resid).all()
