"""Data of ``ordinal-4l``: four ordinal domains, list and sentence prompts, fixed splits, tokenizer.

Every prompt asks for the successor of an item in one of four ordered domains:

- ``numbers``: english number words ``one .. twenty`` (no wrap-around);
- ``months``: ``january .. december`` (cyclic: december -> january);
- ``weekdays``: ``monday .. sunday`` (cyclic: sunday -> monday);
- ``spanish``: spanish number words ``uno .. veinte`` (no wrap-around; ascii spelling).

Two forms per domain, giving eight tasks:

- list (task ``<domain>``): 2..6 consecutive items, each followed by a comma token,
  ``"one , two , three ,"`` -> ``"four"``;
- sentence (task ``<domain>_sentence``): one item in a template,
  ``"this month is july , next month is"`` -> ``"august"``.

Splits are fixed by rules, not by a training seed, so the same task lists serve as the
evaluation battery of every later study:

- ``heldout``: list prompts with ``(start + 2 * length) % 5 == 0`` (about a fifth of the
  (start, length) combinations; every answer still occurs in training with other lengths),
  and every prompt of the templates marked held out (never trained on, in any item).
  Held-out templates recombine trained words; two of them are trained templates of
  *another* domain (``"{x} is followed by"`` for months, ``"after {x} comes"`` for weekdays).
- ``test``: in-distribution, about 15% of the remaining prompts, chosen by a hash of the
  prompt text (stable when prompts are added).
- ``train``: the rest.
"""

import hashlib
from dataclasses import dataclass
from typing import Literal, TypeAlias

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from tl_interp.errors import SelectionError

__all__ = [
    "Split",
    "DOMAINS",
    "CYCLIC",
    "TEMPLATES",
    "HELDOUT_TEMPLATES",
    "TASKS",
    "MIN_ITEMS",
    "MAX_ITEMS",
    "TEST_FRACTION",
    "SPECIAL_TOKENS",
    "SEPARATOR",
    "OrdinalExample",
    "ordinal_examples",
    "ordinal_tasks",
    "analogy_tasks",
    "paired_lists",
    "vocabulary",
    "build_tokenizer",
]

Split: TypeAlias = Literal["train", "test", "heldout"]

DOMAINS: dict[str, tuple[str, ...]] = {
    "numbers": (
        "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
        "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
        "eighteen", "nineteen", "twenty",
    ),
    "months": (
        "january", "february", "march", "april", "may", "june", "july", "august",
        "september", "october", "november", "december",
    ),
    "weekdays": ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"),
    "spanish": (
        "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve", "diez",
        "once", "doce", "trece", "catorce", "quince", "dieciseis", "diecisiete", "dieciocho",
        "diecinueve", "veinte",
    ),
}
CYCLIC: dict[str, bool] = {"numbers": False, "months": True, "weekdays": True, "spanish": False}

# Sentence templates per domain; "{x}" is the item, the answer is its successor.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "numbers": (
        "after {x} comes",
        "the number after {x} is",
        "the number is {x} , the next number is",
        "the number is {x} , then comes",
        "{x} is followed by",
        "the next number after {x} is",
        "the number is {x} , next comes",
    ),
    "months": (
        "this month is {x} , next month is",
        "the month after {x} is",
        "the month is {x} , the next month is",
        "the month is {x} , then comes",
        "after {x} comes",
        "{x} is followed by",
        "the next month after {x} is",
    ),
    "weekdays": (
        "today is {x} , tomorrow is",
        "the day after {x} is",
        "the day is {x} , the next day is",
        "the day is {x} , then comes",
        "{x} is followed by",
        "after {x} comes",
        "the next day after {x} is",
    ),
    "spanish": (
        "el numero es {x} , el siguiente es",
        "el numero es {x} , el siguiente numero es",
        "el numero despues de {x} es",
        "el numero es {x} , luego viene",
        "despues de {x} viene",
        "{x} va seguido de",
        "el siguiente numero despues de {x} es",
        "el numero es {x} , despues viene",
    ),
}
# Never trained on (in any item): the held-out template battery.
HELDOUT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "numbers": ("the next number after {x} is", "the number is {x} , next comes"),
    "months": ("{x} is followed by", "the next month after {x} is"),
    "weekdays": ("after {x} comes", "the next day after {x} is"),
    "spanish": ("el siguiente numero despues de {x} es", "el numero es {x} , despues viene"),
}
TASKS: tuple[str, ...] = (*DOMAINS, *(f"{d}_sentence" for d in DOMAINS))
MIN_ITEMS, MAX_ITEMS = 2, 6
TEST_FRACTION = 0.15
SEPARATOR = "."  # ends a solved example when training packs one before a prompt
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


@dataclass(frozen=True)
class OrdinalExample:
    """One prompt and its answer, with where it came from.

    Args:
        task: ``"<domain>"`` (list form) or ``"<domain>_sentence"``.
        domain: one of ``DOMAINS``.
        prompt: whitespace-separated words, without BOS.
        answer: the successor word (one token).
        start: index in the domain of the first item (list) or of the item (sentence).
        length: number of items in the list (1 for a sentence).
        template: the sentence template, or ``None`` for a list.
        split: ``"train"``, ``"test"`` or ``"heldout"``.
    """

    task: str
    domain: str
    prompt: str
    answer: str
    start: int
    length: int
    template: str | None
    split: Split


def _is_test(prompt: str) -> bool:
    digest = hashlib.sha256(prompt.encode()).digest()
    return int.from_bytes(digest[:4], "big") < TEST_FRACTION * 2**32


def _all_examples() -> list[OrdinalExample]:
    out: list[OrdinalExample] = []
    for domain, items in DOMAINS.items():
        n, cyclic = len(items), CYCLIC[domain]
        for length in range(MIN_ITEMS, MAX_ITEMS + 1):
            for start in range(n if cyclic else n - length):
                seq = [items[(start + i) % n] for i in range(length + 1)]
                prompt = " , ".join(seq[:-1]) + " ,"
                heldout = (start + 2 * length) % 5 == 0
                split = "heldout" if heldout else ("test" if _is_test(prompt) else "train")
                out.append(OrdinalExample(domain, domain, prompt, seq[-1], start, length, None, split))
        for template in TEMPLATES[domain]:
            for start in range(n if cyclic else n - 1):
                prompt = template.format(x=items[start])
                if template in HELDOUT_TEMPLATES[domain]:
                    split = "heldout"
                else:
                    split = "test" if _is_test(prompt) else "train"
                answer = items[(start + 1) % n]
                out.append(
                    OrdinalExample(f"{domain}_sentence", domain, prompt, answer, start, 1, template, split)
                )
    return out


_EXAMPLES = tuple(_all_examples())


def ordinal_examples(split: Split | None = None) -> list[OrdinalExample]:
    """All examples (or one split's), in a fixed order: domain, form, length/template, start.

    Args:
        split: ``"train"``, ``"test"``, ``"heldout"``, or ``None`` for all of them.

    Returns:
        A new list of ``OrdinalExample``.

    Example:
        >>> ex = ordinal_examples("heldout")[0]
        >>> (ex.task, ex.prompt, ex.answer)
        ('numbers', 'two , three ,', 'four')
    """
    if split not in (None, "train", "test", "heldout"):
        raise SelectionError(f"unknown split {split!r}; use 'train', 'test' or 'heldout'")
    return [ex for ex in _EXAMPLES if split is None or ex.split == split]


def ordinal_tasks(split: Split) -> dict[str, list[tuple[str, str]]]:
    """``(prompt, answer)`` pairs per task: the evaluation battery of ``ordinal-4l``.

    Tasks (keys, in this order): ``numbers``, ``months``, ``weekdays``, ``spanish`` (list
    form) and ``numbers_sentence``, ``months_sentence``, ``weekdays_sentence``,
    ``spanish_sentence`` (sentence templates). Prompts carry no BOS: ``model.to_tokens``
    prepends it. The answer is the single next token.

    Args:
        split: ``"train"``, ``"test"`` (in-distribution, unseen prompts) or ``"heldout"``
            (held-out (start, length) combinations and held-out templates).

    Returns:
        A dict from task name to a list of ``(prompt, answer)`` pairs.

    Example:
        >>> tasks = ordinal_tasks("heldout")
        >>> tasks["months_sentence"][0]
        ('january is followed by', 'february')
    """
    tasks: dict[str, list[tuple[str, str]]] = {task: [] for task in TASKS}
    for ex in ordinal_examples(split):
        tasks[ex.task].append((ex.prompt, ex.answer))
    return tasks


def analogy_tasks(split: Split | tuple[Split, ...], target: str = "numbers") -> dict[str, list[tuple[str, str]]]:
    """Steering battery: every prompt re-answered with the ``target`` domain's item at the same index.

    The question of a domain-swap steering vector (e.g. numbers minus months): can it turn
    ``"january , february , march ,"`` (answer ``"april"``, index 3) into ``"four"``
    (``target``'s index 3)? Tasks are keyed like ``ordinal_tasks``; the ``target`` domain's
    own tasks keep their normal answers (steering should not break them). Prompts whose
    answer wraps around (``"december ,"`` -> ``"january"``) or whose index the target domain
    does not have are left out.

    Args:
        split: one split or several (e.g. ``("test", "heldout")``).
        target: the domain whose items are the expected answers.

    Returns:
        ``{task: [(prompt, expected answer), ...]}``; tasks with no prompts are omitted.

    Example:
        >>> analogy_tasks("heldout")["months"][0]
        ('february , march ,', 'four')
    """
    if target not in DOMAINS:
        raise SelectionError(f"unknown target domain {target!r}; use one of {list(DOMAINS)}")
    splits = (split,) if isinstance(split, str) else tuple(split)
    tasks: dict[str, list[tuple[str, str]]] = {}
    for ex in (e for s in splits for e in ordinal_examples(s)):
        index = ex.start + ex.length
        if index >= len(DOMAINS[ex.domain]) or index >= len(DOMAINS[target]):
            continue
        tasks.setdefault(ex.task, []).append((ex.prompt, DOMAINS[target][index]))
    return {task: tasks[task] for task in TASKS if task in tasks}


def paired_lists(split: Split, positive: str = "numbers", negative: str = "months") -> tuple[list[str], list[str]]:
    """List prompts of two domains paired by (start, length): the inputs of a contrast vector.

    Example:
        >>> pos, neg = paired_lists("train")
        >>> pos[0], neg[0]
        ('one , two ,', 'january , february ,')
    """
    for domain in (positive, negative):
        if domain not in DOMAINS:
            raise SelectionError(f"unknown domain {domain!r}; use one of {list(DOMAINS)}")
    lists = [e for e in ordinal_examples(split) if e.template is None]
    by_key = {d: {(e.start, e.length): e.prompt for e in lists if e.domain == d} for d in (positive, negative)}
    keys = sorted(set(by_key[positive]) & set(by_key[negative]), key=lambda k: (k[1], k[0]))
    return [by_key[positive][k] for k in keys], [by_key[negative][k] for k in keys]


def vocabulary() -> list[str]:
    """The word-level vocabulary, in id order: special tokens, domain items, template words.

    Returns:
        A list of distinct tokens; the id of a token is its index.

    Example:
        >>> vocabulary()[:5]
        ['<pad>', '<bos>', '<eos>', '<unk>', ',']
    """
    words = list(SPECIAL_TOKENS.values()) + [",", SEPARATOR]
    for items in DOMAINS.values():
        words += items
    for templates in TEMPLATES.values():
        for template in templates:
            words += [w for w in template.split() if w not in ("{x}", ",")]
    return list(dict.fromkeys(words))


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A Hugging Face fast tokenizer over ``vocabulary()``: WordLevel model, Whitespace split.

    It prepends ``<bos>`` itself (``add_bos_token=True``), so TransformerLens's
    ``set_tokenizer`` records ``tokenizer_prepends_bos=True`` and ``prepend_bos=False``
    strips it. Unknown words map to ``<unk>``; decoding joins tokens with spaces, so a
    whitespace-separated prompt round-trips exactly.

    Returns:
        The tokenizer (save it with ``save_pretrained``; the zoo loads it from disk).

    Example:
        >>> build_tokenizer()("one , two")["input_ids"]
        [1, 6, 4, 7]
    """
    vocab = {word: i for i, word in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        add_bos_token=True,
        add_eos_token=False,
        padding_side="right",
        model_max_length=32,
        **SPECIAL_TOKENS,
    )
