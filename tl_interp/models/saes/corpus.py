"""Offline training and held-out text for the bundled SAEs, built deterministically.

SmolLM2-135M: English documentation prose from CPython's standard library, the
``pydoc_data.topics`` module -- the Python Language Reference sections that ``help()`` shows
(79 documents, ~465k characters in CPython 3.11). It ships with every Python, so it installs
offline, and the corpus is a pure function of the Python version (its SHA-256 goes into each
card). Documents whose name hashes to 0 mod 10 (``sha256("heldout" + name)``) are held out;
the rest is joined with blank lines, tokenised once without special tokens and cut into
``context_size``-token chunks, each starting with the tokenizer's BOS (``<|im_start|>``).

ordinal-4l: the model's own training distribution (``ordinal_data`` train split): BOS, with
probability ``context_prob`` a solved training example and ``"."``, then a prompt and its
answer. Held out: the same construction over the ``test`` and ``heldout`` splits.

The first positions are left out of SAE training and measurement (``SAESpec.first_position``).
``train_data`` / ``heldout_data`` give one SAE's sequences; ``shuffled_batches`` feeds their
activations to sae-lens's trainer.
"""

import hashlib
from collections.abc import Iterator, Sequence
from typing import Any, Literal, TypeAlias

import torch
from jaxtyping import Int
from torch import Tensor

from tl_interp._checks import checked
from tl_interp.errors import InputError
from tl_interp.models.saes.specs import SAESpec

__all__ = [
    "Split",
    "pydoc_documents",
    "pydoc_text",
    "corpus_sha256",
    "chunk_tokens",
    "ordinal_sequences",
    "ordinal_heldout",
    "ORDINAL_HELDOUT_SEED",
    "train_data",
    "heldout_data",
    "shuffled_batches",
]

Split: TypeAlias = Literal["train", "heldout"]
_SALT = "heldout"


def _is_heldout(name: str) -> bool:
    return int(hashlib.sha256((_SALT + name).encode()).hexdigest(), 16) % 10 == 0


def pydoc_documents(split: Split) -> list[tuple[str, str]]:
    """The ``pydoc_data.topics`` documents of one split, sorted by name.

    Args:
        split: ``"train"`` (~90%) or ``"heldout"`` (names with ``sha256("heldout"+name) % 10 == 0``).

    Returns:
        ``[(name, text), ...]``.

    Example:
        >>> [name for name, _ in pydoc_documents("heldout")][:2]
        ['atom-literals', 'attribute-references']
    """
    from pydoc_data.topics import topics

    return [(name, topics[name]) for name in sorted(topics) if _is_heldout(name) == (split == "heldout")]


def pydoc_text(split: Split) -> str:
    """One split of the corpus as a single string: its documents joined by blank lines.

    Example:
        >>> pydoc_text("heldout").startswith("Literals")
        True
    """
    return "\n\n".join(text for _, text in pydoc_documents(split))


def corpus_sha256() -> str:
    """SHA-256 of both splits' text (records which Python's documentation was used).

    Example:
        >>> len(corpus_sha256())
        64
    """
    return hashlib.sha256((pydoc_text("train") + "\x00" + pydoc_text("heldout")).encode()).hexdigest()


@checked
def chunk_tokens(
    tokenizer: Any, text: str, context_size: int, *, prepend_bos: bool = True, max_chunks: int | None = None
) -> Tensor:
    """Tokenise ``text`` without special tokens and cut it into full-length chunks.

    Args:
        tokenizer: a Hugging Face tokenizer (``model.tokenizer``).
        text: the text, e.g. ``pydoc_text("train")``.
        context_size: tokens per chunk, BOS included.
        prepend_bos: start every chunk with ``tokenizer.bos_token_id`` (SmolLM2's
            ``<|im_start|>``), so the attention sink is always position 0; without it
            the sink moves to the first content token(s) and their residual norm is ~1e2
            times the rest.
        max_chunks: keep at most this many chunks (the first ones).

    Returns:
        ``(n_chunks, context_size)`` int64 token ids; the tail shorter than a chunk is dropped.

    Example:
        >>> from tl_interp.models.zoo.ordinal_data import build_tokenizer
        >>> chunk_tokens(build_tokenizer(), "one , two , three", 3).tolist()  # "three" is dropped
        [[1, 6, 4], [1, 7, 4]]
    """
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    width = context_size - int(prepend_bos)
    n = len(ids) // width
    if max_chunks is not None:
        n = min(n, max_chunks)
    chunks = torch.tensor(ids[: n * width], dtype=torch.long).view(n, width)
    if prepend_bos:
        chunks = torch.cat([torch.full((n, 1), tokenizer.bos_token_id, dtype=torch.long), chunks], 1)
    return chunks


def _pad(rows: Sequence[list[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        tokens[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return tokens, mask


@checked
def ordinal_sequences(
    tokenizer: Any, n: int, *, seed: int, splits: Sequence[str] = ("train",), context_prob: float = 0.5
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """``n`` sequences drawn as ordinal-4l's training batches are, each ending in its answer.

    A task uniformly, then a prompt of it from ``splits``; with probability ``context_prob``
    a solved example from the same splits and ``"."`` go first (as in ``tl_interp.training.ordinal``).

    Args:
        tokenizer: the ordinal-4l tokenizer (``model.tokenizer``).
        n: number of sequences.
        seed: seeds every choice.
        splits: ``ordinal_data`` splits to draw prompts and contexts from.
        context_prob: probability of a preceding solved example.

    Returns:
        ``(tokens, attention_mask)``, right-padded, BOS first, the answer last.

    Example:
        >>> from tl_interp.models.zoo.ordinal_data import build_tokenizer
        >>> tokens, mask = ordinal_sequences(build_tokenizer(), 4, seed=0)
        >>> tokens.shape[0], int(mask[:, 0].sum())
        (4, 4)
    """
    from tl_interp.models.zoo import ordinal_data as data

    tasks = [[pair for split in splits for pair in data.ordinal_tasks(split)[task]] for task in data.TASKS]
    flat = [pair for pairs in tasks for pair in pairs]
    ids = [tokenizer.convert_tokens_to_ids(p.split() + [a]) for p, a in flat]
    offsets = torch.tensor([0] + [len(p) for p in tasks]).cumsum(0)
    bos, sep = tokenizer.bos_token_id, tokenizer.convert_tokens_to_ids(data.SEPARATOR)
    gen = torch.Generator().manual_seed(seed)
    task = torch.randint(len(tasks), (n,), generator=gen)
    size = offsets[task + 1] - offsets[task]
    rows = (offsets[task] + (torch.rand(n, generator=gen) * size).long()).tolist()
    context = (torch.rand(n, generator=gen) < context_prob).tolist()
    other = torch.randint(len(ids), (n,), generator=gen).tolist()
    seqs = [[bos] + ([*ids[o], sep] if c else []) + ids[r] for r, c, o in zip(rows, context, other)]
    return _pad(seqs, tokenizer.pad_token_id)


ORDINAL_HELDOUT_SEED = 12345


@checked
def ordinal_heldout(tokenizer: Any, n: int = 2000) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """Held-out ordinal-4l sequences: ``ordinal_sequences`` over the ``test`` and ``heldout`` splits.

    Prompts and contexts both come from prompts the model (and the SAE) never trained on,
    including ``ordinal_data.HELDOUT_TEMPLATES``; drawn with the fixed seed
    ``ORDINAL_HELDOUT_SEED``.

    Args:
        tokenizer: the ordinal-4l tokenizer.
        n: number of sequences.

    Returns:
        ``(tokens, attention_mask)``, right-padded; the answer is each row's last real token.

    Example:
        >>> from tl_interp.models.zoo.ordinal_data import build_tokenizer
        >>> tokens, mask = ordinal_heldout(build_tokenizer(), 5)
        >>> tokens.shape[0]
        5
    """
    return ordinal_sequences(tokenizer, n, seed=ORDINAL_HELDOUT_SEED, splits=("test", "heldout"))


def train_data(spec: SAESpec, model: Any, *, seed: int, n: int | None = None) -> tuple[Tensor, Tensor]:
    """The training sequences of ``spec``: ``(tokens, attention_mask)``, right-padded.

    Args:
        spec: the SAE's spec.
        model: its model (for the tokenizer).
        seed: picks the pydoc chunks / draws the ordinal sequences.
        n: number of sequences (default ``spec.n_train``).

    Returns:
        ``(tokens, mask)``.

    Example:
        >>> from tl_interp.models.zoo import load
        >>> from tl_interp.models.saes.specs import SPECS
        >>> tokens, mask = train_data(SPECS["ordinal-4l-res-l2"], load("ordinal-4l"), seed=0, n=8)
        >>> tokens.shape[0]
        8
    """
    n = spec.n_train if n is None else n
    if spec.data == "ordinal":
        return ordinal_sequences(model.tokenizer, n, seed=seed)
    chunks = chunk_tokens(model.tokenizer, pydoc_text("train"), spec.context_size)
    pick = torch.randperm(chunks.shape[0], generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return chunks[pick], torch.ones_like(chunks[pick])


def heldout_data(spec: SAESpec, model: Any, n: int | None = None) -> tuple[Tensor, Tensor]:
    """The held-out sequences the card's figures are measured on (the first ``n``).

    Args:
        spec: the SAE's spec.
        model: its model (for the tokenizer).
        n: how many (default ``spec.n_heldout``): the first ``n`` of the card's set.

    Returns:
        ``(tokens, mask)``: pydoc held-out chunks, or ``corpus.ordinal_heldout`` sequences.

    Example:
        >>> from tl_interp.models.zoo import load
        >>> from tl_interp.models.saes.specs import SPECS
        >>> heldout_data(SPECS["ordinal-4l-res-l2"], load("ordinal-4l"), n=3)[0].shape[0]
        3
    """
    n = spec.n_heldout if n is None else n
    if spec.data == "ordinal":
        tokens, mask = ordinal_heldout(model.tokenizer, spec.n_heldout)
    else:
        tokens = chunk_tokens(model.tokenizer, pydoc_text("heldout"), spec.context_size)
        mask = torch.ones_like(tokens)
    return tokens[:n], mask[:n]


def shuffled_batches(acts: Tensor, batch_size: int, *, seed: int) -> Iterator[Tensor]:
    """An endless stream of batches: each epoch is a fresh seeded permutation of ``acts``.

    Args:
        acts: ``(n, d_in)`` activations.
        batch_size: rows per batch (an epoch's incomplete last batch is dropped).
        seed: seeds the permutations.

    Returns:
        An iterator of ``(batch_size, d_in)`` tensors (sae-lens's ``DataProvider``).

    Example:
        >>> batches = shuffled_batches(torch.arange(6.0)[:, None], 4, seed=0)
        >>> [next(batches).shape[0] for _ in range(3)]
        [4, 4, 4]
    """
    if batch_size > acts.shape[0]:
        raise InputError(f"a batch of {batch_size} activations needs at least that many; there are "
                         f"{acts.shape[0]}: train on more sequences (--n-train)")
    gen = torch.Generator().manual_seed(seed)
    while True:
        perm = torch.randperm(acts.shape[0], generator=gen)
        for i in range(0, acts.shape[0] - batch_size + 1, batch_size):
            yield acts[perm[i : i + batch_size]]
