"""ordinal-4l: the packaged model loads with its tokenizer and continues all four domains."""

import json

import pytest
import torch
from safetensors.torch import load_file

from tl_interp.errors import ModelLoadError, SelectionError
from tl_interp.models import train, zoo
from tl_interp.models.zoo import ordinal, ordinal_data

# Seed 0 measures 1.0 held-out accuracy on every task. The smallest task has 7 prompts
# (weekday lists), so 0.85 tolerates one miss per task; overall 0.95 tolerates ~9 of 165.
HELDOUT_TASK_MIN = 0.85
HELDOUT_OVERALL_MIN = 0.95
TEST_TASK_MIN = 0.9
HELDOUT_LOSS_MAX = 0.2


@pytest.fixture(scope="module")
def model():
    return zoo.REGISTRY["ordinal-4l"]()


def one_prompt_at_a_time(model, pairs):
    """Accuracy and mean answer loss with TransformerLens's own to_tokens, one unpadded prompt per
    forward pass: an independent recomputation of what evaluate_ordinal_4l (batched, padded) wrote."""
    tok = model.tokenizer
    hits, losses = [], []
    with torch.no_grad():
        for prompt, answer in pairs:
            logits = model(model.to_tokens(prompt))[0, -1]
            target = tok.convert_tokens_to_ids(answer)
            hits.append(int(logits.argmax()) == target)
            losses.append(float(-logits.double().log_softmax(-1)[target]))
    return sum(hits) / len(hits), sum(losses) / len(losses)


@pytest.fixture(scope="module")
def evaluation(model):
    # ~400 tiny forward passes: on a busy 2-core machine two intra-op threads are slower than one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = {}
        for split in ("test", "heldout"):
            per_task = {t: one_prompt_at_a_time(model, pairs) for t, pairs in ordinal.ordinal_tasks(split).items()}
            out[split] = {"accuracy": {t: a for t, (a, _) in per_task.items()},
                          "loss": {t: l for t, (_, l) in per_task.items()}}
        heldout = ordinal.ordinal_examples("heldout")
        pairs = [(e.prompt, e.answer) for e in heldout]
        out["heldout"]["overall_accuracy"] = one_prompt_at_a_time(model, pairs)[0]
        out["heldout_accuracy_by_template"] = {
            f"{domain}: {template}": round(one_prompt_at_a_time(
                model, [(e.prompt, e.answer) for e in heldout if e.template == template and e.domain == domain])[0], 4)
            for domain, templates in ordinal_data.HELDOUT_TEMPLATES.items() for template in templates
        }
        return out
    finally:
        torch.set_num_threads(threads)


def test_registry_and_models_load_give_the_same_model_with_a_tokenizer(model):
    from tl_interp import models

    other = models.load("ordinal-4l")
    assert other.tokenizer is not None and model.cfg.n_layers == 4
    for (name, p), (_, q) in zip(model.named_parameters(), other.named_parameters()):
        assert torch.equal(p, q), name


def test_to_tokens_prepends_bos_once_and_prepend_bos_false_drops_it(model):
    assert model.cfg.default_prepend_bos and model.cfg.tokenizer_prepends_bos
    assert model.to_str_tokens("after july comes") == ["<bos>", "after", "july", "comes"]
    assert model.to_str_tokens("after july comes", prepend_bos=False) == ["after", "july", "comes"]


@pytest.mark.parametrize("split", ["train", "test", "heldout"])
def test_every_prompt_round_trips_through_to_tokens_and_to_string(model, split):
    prompts = [p for pairs in ordinal.ordinal_tasks(split).values() for p, _ in pairs]
    tokens = model.to_tokens(prompts)
    texts = model.tokenizer.batch_decode(tokens, skip_special_tokens=True)
    assert texts == prompts
    assert model.to_string(model.to_tokens(prompts[0])[0]) == "<bos> " + prompts[0]
    assert not (tokens == model.tokenizer.unk_token_id).any()


def test_every_task_word_and_answer_is_a_single_known_token(model):
    tok = model.tokenizer
    words = {w for ex in ordinal_data.ordinal_examples() for w in (*ex.prompt.split(), ex.answer)}
    for word in sorted(words):
        assert tok.tokenize(word) == [word], word
        assert tok.convert_tokens_to_ids(word) != tok.unk_token_id, word
    assert len(tok) == model.cfg.d_vocab == len(ordinal_data.vocabulary())


def test_packaged_tokenizer_matches_the_one_the_code_builds(model):
    built = ordinal_data.build_tokenizer()
    assert built.get_vocab() == model.tokenizer.get_vocab()
    prompt = "el numero es tres , el siguiente es"
    assert built(prompt)["input_ids"] == model.to_tokens(prompt)[0].tolist()


def test_unknown_words_become_unk_instead_of_failing(model):
    assert model.to_str_tokens("after banana comes") == ["<bos>", "after", "<unk>", "comes"]


def test_splits_are_disjoint_and_cover_every_task():
    splits = {s: {(p, a) for pairs in ordinal.ordinal_tasks(s).values() for p, a in pairs}
              for s in ("train", "test", "heldout")}
    assert not splits["train"] & splits["test"]
    assert not splits["train"] & splits["heldout"]
    assert not splits["test"] & splits["heldout"]
    for split in splits:
        tasks = ordinal.ordinal_tasks(split)
        assert list(tasks) == list(ordinal.TASKS) and all(tasks.values()), split


def test_heldout_templates_never_occur_in_training():
    train_templates = {ex.template for ex in ordinal.ordinal_examples("train")}
    for domain, templates in ordinal_data.HELDOUT_TEMPLATES.items():
        trained = {e.template for e in ordinal.ordinal_examples("train") if e.domain == domain}
        assert not set(templates) & trained, domain
    assert None in train_templates  # lists are trained too


def test_tasks_follow_the_cyclic_and_linear_orders():
    heldout = dict(ordinal.ordinal_tasks("heldout")["months_sentence"])
    assert heldout["december is followed by"] == "january"
    weekdays = dict(ordinal.ordinal_tasks("heldout")["weekdays_sentence"])
    assert weekdays["after sunday comes"] == "monday"
    every_number = [ex for ex in ordinal.ordinal_examples() if ex.domain == "numbers"]
    assert all(ex.answer != "one" for ex in every_number)  # no wrap-around


def test_unknown_split_is_rejected_with_the_valid_names():
    # SelectionError from the function; under the test suite's jaxtyping import hook,
    # beartype rejects the Literal first (a TypeError naming the same three splits)
    with pytest.raises((SelectionError, TypeError), match=r"'train', 'test',? (or )?'heldout'"):
        ordinal.ordinal_examples("validation")


@pytest.mark.parametrize("task", ordinal_data.TASKS)
def test_heldout_accuracy_meets_the_threshold_and_matches_the_card(model, evaluation, task):
    card = model.card["evaluation"]["heldout"]
    measured = evaluation["heldout"]
    assert measured["accuracy"][task] >= HELDOUT_TASK_MIN
    assert measured["loss"][task] <= HELDOUT_LOSS_MAX
    assert abs(measured["accuracy"][task] - card["accuracy"][task]) < 1e-4
    assert abs(measured["loss"][task] - card["loss"][task]) < 2e-4
    assert evaluation["test"]["accuracy"][task] >= TEST_TASK_MIN


def test_overall_heldout_accuracy_and_every_heldout_template(model, evaluation):
    assert evaluation["heldout"]["overall_accuracy"] >= HELDOUT_OVERALL_MIN
    by_template = evaluation["heldout_accuracy_by_template"]
    assert by_template == model.card["evaluation"]["heldout_accuracy_by_template"]
    assert min(by_template.values()) >= 0.8


def test_batched_answers_equal_one_prompt_at_a_time(model):
    heldout = ordinal.ordinal_tasks("heldout")
    pairs = heldout["spanish_sentence"][:6] + heldout["months"][:6]
    tokens, last = ordinal.encode(model.tokenizer, [p for p, _ in pairs])
    with torch.no_grad():
        batched = ordinal.answer_logits(model, tokens, last)
        single = torch.cat([model(model.to_tokens(p))[:, -1] for p, _ in pairs])
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)


def test_card_records_the_weights_it_describes(model):
    info = model.card
    path = zoo.ZOO_DIR / "weights" / "ordinal-4l.safetensors"
    assert path.stat().st_size == info["files"]["weights/ordinal-4l.safetensors"]["bytes"] < 5_000_000
    assert set(info["files"]) == {"weights/ordinal-4l.safetensors", "tokenizers/ordinal-4l/tokenizer.json",
                                  "tokenizers/ordinal-4l/tokenizer_config.json"}
    assert info["provenance"]["seed"] == 0 and info["provenance"]["steps"] > 0
    assert info["architecture"]["n_layers"] == 4 and info["tokenizer"]["vocab_size"] == model.cfg.d_vocab


def test_missing_tokenizer_is_a_load_error_with_the_fix(tmp_path):
    with pytest.raises(ModelLoadError, match=r"no tokenizer for zoo model 'ordinal-4l'.*train it with"):
        ordinal.read_tokenizer(tmp_path)


def test_training_a_few_steps_writes_weights_card_and_tokenizer_that_load(tmp_path):
    assert train.main(["ordinal-4l", "--steps", "3", "--seed", "5", "--out", str(tmp_path)]) == 0
    loaded = zoo.load("ordinal-4l", directory=tmp_path)
    assert loaded.to_str_tokens("one , two ,") == ["<bos>", "one", ",", "two", ","]
    card = json.loads((tmp_path / "cards" / "ordinal-4l.json").read_text())
    assert card["provenance"]["steps"] == 3 and card["provenance"]["seed"] == 5
    weights = load_file(tmp_path / "weights" / "ordinal-4l.safetensors")
    torch.testing.assert_close(weights["embed.W_E"], loaded.embed.W_E, rtol=0, atol=0)


def test_training_is_deterministic_under_a_seed_and_depends_on_it():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs = [ordinal_train_weights(seed) for seed in (3, 3, 4)]
    finally:
        torch.set_num_threads(threads)
    assert runs[0].keys() == runs[1].keys()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not torch.equal(runs[0]["blocks.0.attn.W_Q"], runs[2]["blocks.0.attn.W_Q"])


def ordinal_train_weights(seed: int) -> dict[str, torch.Tensor]:
    from tl_interp.training.ordinal import train_ordinal_4l

    trained, _ = train_ordinal_4l(steps=3, seed=seed, batch_size=8)
    return {k: p.detach().clone() for k, p in trained.named_parameters()}
