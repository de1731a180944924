"""The bundled zoo models load fast and carry the mechanism their cards claim.

Quality thresholds are the ones recorded in each card under ``quality_thresholds`` (and
defined next to the model in ``tl_interp.models.zoo``); the held-out data are regenerated
here from the seeds the cards name. The card's numbers are checked against an independent
recomputation (TransformerLens's own per-token loss, attention patterns read from its
cache, heads ablated with a hook written here, S5 products composed from permutations),
not against the functions that wrote the card.
"""

import pytest
import torch

from tl_interp.errors import ArtifactError, ModelLoadError, SelectionError
from tl_interp.models import zoo
from tl_interp.models.zoo import induction, s5_mlp


@pytest.fixture(scope="module")
def induction_model():
    return zoo.load("induction-2l")


@pytest.fixture(scope="module")
def s5_model():
    return zoo.load("s5-mlp")


def held_out_repeats(half_len: int = induction.EVAL_HALF_LEN, seed: int = induction.EVAL_SEED):
    return induction.repeated_tokens(256, half_len, generator=torch.Generator().manual_seed(seed))


def tl_half_losses(model, tokens, zero=()):
    """First/repeated-half losses from TransformerLens's per-token loss, heads zeroed by a hand-written hook."""
    half_len = (tokens.shape[1] - 1) // 2

    def zero_heads(z, hook):
        z = z.clone()
        for layer, head in zero:
            if hook.name == f"blocks.{layer}.attn.hook_z":
                z[:, :, head] = 0.0
        return z

    hooks = [(f"blocks.{layer}.attn.hook_z", zero_heads) for layer in {layer for layer, _ in zero}]
    with torch.no_grad():
        per_token = model.run_with_hooks(tokens, return_type="loss", loss_per_token=True, fwd_hooks=hooks)
    # per_token[:, p] scores token p + 1: the targets r[1:] of each copy
    return float(per_token[:, 1:half_len].mean()), float(per_token[:, half_len + 1:].mean())


def tl_head_scores(model, tokens):
    """Previous-token and induction scores read off TransformerLens's attention patterns."""
    half_len = (tokens.shape[1] - 1) // 2
    _, cache = model.run_with_cache(tokens)
    pos = torch.arange(1, tokens.shape[1])
    second = torch.arange(half_len + 1, 2 * half_len + 1)
    prev = torch.stack([cache["pattern", layer][:, :, pos, pos - 1].mean(dim=(0, 2))
                        for layer in range(model.cfg.n_layers)])
    ind = torch.stack([cache["pattern", layer][:, :, second, second - half_len + 1].mean(dim=(0, 2))
                       for layer in range(model.cfg.n_layers)])
    return prev, ind


def test_registry_holds_both_models_and_each_loader_attaches_its_card():
    assert {"induction-2l", "s5-mlp"} <= set(zoo.REGISTRY)
    for name in ("induction-2l", "s5-mlp"):
        model = zoo.REGISTRY[name]()
        assert model.card == zoo.card(name)
        assert model.card["name"] == name
        assert not model.training


def test_an_unknown_name_names_the_closest_model():
    expected = r"no zoo model 'induction2l'; did you mean 'induction-2l'"
    with pytest.raises(ModelLoadError, match=expected):
        zoo.load("induction2l")


def test_a_directory_without_weights_says_how_to_train_them(tmp_path):
    with pytest.raises(ArtifactError, match=r"s5-mlp.json. is missing; retrain it with `python -m tl_interp.models.train s5-mlp --out"):
        zoo.load("s5-mlp", directory=tmp_path)


# --- induction-2l -------------------------------------------------------------------


def test_induction_repeated_half_loss_is_far_below_the_first_half(induction_model):
    q = induction.QUALITY_THRESHOLDS
    first, repeated = induction.half_losses(induction_model, held_out_repeats())
    assert first > q["min_first_half_loss"]  # the first copy really is unpredictable
    assert repeated < q["max_repeated_half_loss"]
    assert first / repeated > q["min_first_over_repeated_loss_ratio"]


def test_top_induction_head_is_in_layer_1_and_top_previous_token_head_in_layer_0(
    induction_model,
):
    q = induction.QUALITY_THRESHOLDS
    prev, ind = induction.head_scores(induction_model, held_out_repeats())
    prev_layer, _ = divmod(int(prev.argmax()), prev.shape[1])
    ind_layer, _ = divmod(int(ind.argmax()), ind.shape[1])
    assert (prev_layer, ind_layer) == (0, 1)
    assert float(prev.max()) > q["min_previous_token_score"]
    assert float(ind.max()) > q["min_induction_score"]


def test_the_card_names_the_heads_and_losses_the_packaged_weights_measure(induction_model):
    card = induction_model.card
    ev = card["evaluation"]
    assert card["quality_thresholds"] == induction.QUALITY_THRESHOLDS
    first, repeated = tl_half_losses(induction_model, held_out_repeats())
    prev, ind = tl_head_scores(induction_model, held_out_repeats())
    assert first == pytest.approx(ev["first_half_loss"], abs=1e-3)
    assert repeated == pytest.approx(ev["repeated_half_loss"], abs=1e-3)
    torch.testing.assert_close(prev, torch.tensor(ev["previous_token_scores"]), rtol=0, atol=1e-3)
    torch.testing.assert_close(ind, torch.tensor(ev["induction_scores"]), rtol=0, atol=1e-3)
    assert prev[tuple(ev["previous_token_head"])] == prev.max()
    assert ind[tuple(ev["induction_head"])] == ind.max()


def test_the_library_functions_agree_with_the_independent_recomputation(induction_model):
    tokens = held_out_repeats(12, seed=3)
    assert induction.half_losses(induction_model, tokens, zero_ablate=[(0, 1)]) == pytest.approx(
        tl_half_losses(induction_model, tokens, zero=[(0, 1)]), abs=1e-6)
    for ours, theirs in zip(induction.head_scores(induction_model, tokens), tl_head_scores(induction_model, tokens)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("half_len", [10, 20])
def test_induction_works_at_other_lengths_and_seeds(induction_model, half_len):
    # One induction head does the copying, so the top head is the same at every length.
    q = induction.QUALITY_THRESHOLDS
    tokens = held_out_repeats(half_len, seed=7)
    first, repeated = induction.half_losses(induction_model, tokens)
    _, ind = induction.head_scores(induction_model, tokens)
    assert first / repeated > q["min_first_over_repeated_loss_ratio"]
    top = divmod(int(ind.argmax()), ind.shape[1])
    assert list(top) == induction_model.card["evaluation"]["induction_head"]
    assert top[0] == 1
    assert float(ind.max()) > q["min_induction_score"]


def test_one_induction_head_is_the_single_point_of_failure_and_prev_token_heads_are_redundant(
    induction_model,
):
    # The mechanism the card claims, measured from scratch: the head with the top induction
    # score is the only head above the induction threshold and the only one whose zero
    # ablation destroys copying; two or more layer-0 heads are previous-token heads, and
    # cutting any single head other than the induction head costs little.
    q = induction.QUALITY_THRESHOLDS
    ev = induction_model.card["evaluation"]
    tokens = held_out_repeats()
    prev, ind = tl_head_scores(induction_model, tokens)
    n_layers, n_heads = ind.shape

    def heads_above(scores, threshold):
        return [divmod(int(i), n_heads) for i in (scores.flatten() > threshold).nonzero()]

    top = divmod(int(ind.argmax()), n_heads)
    assert heads_above(ind, q["min_induction_score"]) == [top] and top[0] == 1
    assert [list(top)] == ev["induction_heads"]
    prev_heads = heads_above(prev, q["min_previous_token_score"])
    assert len(prev_heads) >= 2 and all(layer == 0 for layer, _ in prev_heads)
    assert sorted(prev_heads) == sorted(tuple(h) for h in ev["previous_token_heads"])

    _, clean = tl_half_losses(induction_model, tokens)
    effect = {
        (layer, head): tl_half_losses(induction_model, tokens, zero=[(layer, head)])[1] - clean
        for layer in range(n_layers)
        for head in range(n_heads)
    }
    assert effect[top] > q["min_induction_head_ablation_effect"]
    others = {h: e for h, e in effect.items() if h != top}
    assert max(others.values()) < q["max_other_head_ablation_effect"]
    assert all(abs(effect[h]) < q["max_other_head_ablation_effect"] for h in prev_heads)

    # the card's ablation scan records the same effects, ranked, with intervals
    ranking = ev["ablation_scan"]["ranking"]
    assert tuple(ranking[0]["index"]) == top
    assert {tuple(r["index"]) for r in ranking} == set(effect)
    for r in ranking:
        assert r["effect"] == pytest.approx(effect[tuple(r["index"])], abs=1e-3)
        assert r["ci_low"] <= r["effect"] <= r["ci_high"]
    assert ranking[0]["ci_low"] > q["min_induction_head_ablation_effect"]
    recorded = torch.tensor(ev["repeated_half_loss_zero_ablating_each_head"])
    measured = torch.tensor(
        [[clean + effect[(layer, h)] for h in range(n_heads)] for layer in range(n_layers)]
    )
    torch.testing.assert_close(measured, recorded, rtol=0, atol=1e-3)


def test_cutting_the_previous_token_heads_or_layer_1_breaks_induction(induction_model):
    ev = induction_model.card["evaluation"]
    prev_heads = [tuple(h) for h in ev["previous_token_heads"]]
    assert prev_heads and all(layer == 0 for layer, _ in prev_heads)
    tokens = held_out_repeats()
    _, clean = tl_half_losses(induction_model, tokens)
    _, no_prev = tl_half_losses(induction_model, tokens, zero=prev_heads)
    layer_1 = [(1, head) for head in range(induction_model.cfg.n_heads)]
    _, no_layer_1 = tl_half_losses(induction_model, tokens, zero=layer_1)
    assert no_prev > 10 * clean  # K-composition: induction needs the previous-token heads
    assert no_layer_1 > 0.9 * ev["uniform_loss"]  # nothing else copies in context
    recorded = ev["repeated_half_loss_zero_ablating_previous_token_heads"]
    assert no_prev == pytest.approx(recorded, abs=1e-3)
    assert no_layer_1 == pytest.approx(ev["repeated_half_loss_zero_ablating_layer_1"], abs=1e-3)


def test_an_ablation_leaves_no_hook_behind(induction_model):
    induction.half_losses(induction_model, held_out_repeats(5), zero_ablate=[(0, 1), (1, 2)])
    assert not any(hp._forward_hooks for hp in induction_model.hook_dict.values())


# --- s5-mlp ---------------------------------------------------------------------------


def test_s5_mlp_is_near_perfect_on_held_out_pairs(s5_model):
    ev = s5_model.card["evaluation"]
    fraction = s5_model.card["hyperparameters"]["train_fraction"]
    train_idx, test_idx = s5_mlp.train_test_split(ev["split_seed"], fraction)
    assert len(test_idx) == ev["n_test"]
    assert not set(train_idx.tolist()) & set(test_idx.tolist())
    # labels composed from the permutations here, (x * y)(i) = x(y(i)), not from the table
    els = zoo.elements()
    index = {p: i for i, p in enumerate(els)}
    pairs = torch.tensor([[t // 120, t % 120] for t in test_idx.tolist()])
    labels = torch.tensor([index[tuple(els[x][els[y][i]] for i in range(5))] for x, y in pairs.tolist()])
    with torch.no_grad():
        logits = s5_model(pairs).double()
    acc = float((logits.argmax(-1) == labels).double().mean())
    loss = float(torch.nn.functional.cross_entropy(logits, labels))
    assert acc >= s5_mlp.QUALITY_THRESHOLDS["min_test_accuracy"]
    assert acc == pytest.approx(ev["test_accuracy"], abs=1e-6)
    assert loss == pytest.approx(ev["test_loss"], rel=1e-3)
    assert s5_model.card["quality_thresholds"] == s5_mlp.QUALITY_THRESHOLDS


def test_s5_mlp_answers_follow_the_documented_composition_convention(s5_model):
    # (x * y)(i) = x(y(i)): the model's answer, decoded to a permutation, composes so.
    els = zoo.elements()
    pairs = torch.tensor([[3, 77], [77, 3], [119, 119], [0, 45], [58, 1]])
    answers = s5_model(pairs).argmax(-1).tolist()
    for (x, y), z in zip(pairs.tolist(), answers):
        assert els[z] == tuple(els[x][els[y][i]] for i in range(5))


def test_s5_mlp_hook_points_carry_the_documented_shapes(s5_model):
    pairs, _ = s5_mlp.all_pairs()
    logits, cache = s5_model.run_with_cache(pairs[:7])
    cfg = s5_model.cfg
    shapes = {name: tuple(act.shape) for name, act in cache.items()}
    assert shapes == {
        "hook_embed_x": (7, cfg.d_embed),
        "hook_embed_y": (7, cfg.d_embed),
        "hook_pre": (7, cfg.d_hidden),
        "hook_hidden": (7, cfg.d_hidden),
        "hook_logits": (7, 120),
    }
    torch.testing.assert_close(cache["hook_hidden"], cache["hook_pre"].relu(), rtol=0, atol=0)
    torch.testing.assert_close(cache["hook_logits"], logits, rtol=0, atol=0)


def test_s5_mlp_rejects_element_indices_out_of_range(s5_model):
    with pytest.raises(SelectionError, match=r"expected indices in \[0, 119\]"):
        s5_model(torch.tensor([[0, 120]]))
