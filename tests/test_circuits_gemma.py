"""ti.circuits on Gemma-3-270M (opt-in package; marked ``real_model`` and ``gemma``): q/k norms,
local and global layers, one key/value head, norms after attention and MLP outputs. Exact single
edges and batched faithfulness equal the hand-hooked loops on the months task. Skips without the
package (``tests/test_gemma.py`` says what to install), except under CI, where it fails."""

import pytest
import torch

import tl_interp as ti
from tests import _circuits_reference as ref
from tests.test_circuits_smollm2 import exact_of_some_edges
from tests.test_gemma import _require_package

pytestmark = [pytest.mark.real_model, pytest.mark.gemma]

CLEAN = ["January, February, March,", "June, July, August,"]
CORRUPTED = ["July, August, September,", "December, January, February,"]


@pytest.fixture(scope="module")
def model():
    _require_package()
    return ti.models.load("gemma-3-270m", device="cpu")


def _task(model):
    ids = lambda words: torch.cat([model.to_tokens(w, prepend_bos=False)[0] for w in words])  # noqa: E731
    correct, wrong = ids([" April", " September"]), ids([" October", " March"])
    assert correct.shape == wrong.shape == (2,)
    clean, corrupted = model.to_tokens(CLEAN), model.to_tokens(CORRUPTED)
    assert clean.shape == corrupted.shape
    rows = torch.arange(2)
    return clean, corrupted, ti.metrics.logit_diff(correct, wrong), (
        lambda logits: logits[rows, -1, correct] - logits[rows, -1, wrong])


def test_exact_edges_and_faithfulness_on_gemma3_equal_the_hand_loops(model):
    clean, corrupted, metric, score = _task(model)
    g = ti.circuits.graph(model)
    gen = torch.Generator().manual_seed(0)
    some = sorted(set(torch.randperm(len(g.edges), generator=gen)[:8].tolist())
                  | {g.index(e) for e in ("input->a0.h0<q>", "input->a5.h1<k>", "a3.h2->a5.h0<v>", "m4->m17",
                                          "a17.h3->logits", "m17->logits")})
    values, _, _ = exact_of_some_edges(model, clean, corrupted, metric, some)
    expected = ref.single_edges(model, clean, corrupted, score, [g.edges[i] for i in some])
    torch.testing.assert_close(values, expected, atol=1e-4, rtol=1e-4)  # 18 layers of float32 rounding
    assert float(expected.abs().max()) > 1e-2  # the sampled edges move the metric
    chosen = [g.edges, [], [e for i, e in enumerate(g.edges) if i % 3 == 0]]
    f = ti.circuits.faithfulness(model, clean, corrupted, chosen, metric, progress=False)
    with ref.flags(model), torch.no_grad():
        _, cache = model.run_with_cache(corrupted)
    by_hand = torch.stack([ref.circuit_values(model, clean, cache, score, g.edges, c) for c in chosen])
    torch.testing.assert_close(f.values, by_hand, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(f.values[1], score(model(corrupted)), atol=1e-4, rtol=1e-4)
