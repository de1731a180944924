"""``ordinal-4l``: a 4-layer transformer that continues ordered sequences in four domains.

English number words, months, weekdays and spanish number words, as comma lists
(``"one , two , three ,"`` -> ``"four"``) and sentence templates (``"today is monday ,
tomorrow is"`` -> ``"tuesday"``); data and splits in ``ordinal_data``. The model is a
TransformerLens ``HookedTransformer`` with a real Hugging Face word-level tokenizer (stored
with ``save_pretrained`` next to the weights, in ``tokenizers/ordinal-4l/``), so
``to_tokens``, ``to_str_tokens``, ``to_string`` and circuitsvis work on plain text. It is
the bundled subject for steering studies across domains (e.g. a numbers-minus-months
vector), evaluated on ``ordinal_tasks(split)``.

Architecture: 4 layers, d_model 128, 4 heads of 32, d_mlp 512, LayerNorm, GELU, learned
positions, n_ctx 32, BOS first: a GPT-2-style block, the family most TransformerLens tooling
assumes. Training and its choices: ``tl_interp.training.ordinal``.
"""

import json
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor, nn
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from tl_interp import compat
from tl_interp._checks import checked
from tl_interp.errors import ModelLoadError
from tl_interp.models.zoo import ordinal_data as data
from tl_interp.models.zoo._store import ZOO_DIR, read_card, read_weights
from tl_interp.models.zoo.ordinal_data import TASKS, ordinal_examples, ordinal_tasks

__all__ = [
    "NAME",
    "TASKS",
    "ordinal_tasks",
    "ordinal_examples",
    "ordinal_config",
    "ordinal_fields",
    "tokenizer_dir",
    "write_tokenizer",
    "read_tokenizer",
    "load_ordinal_4l",
    "encode",
    "answer_logits",
    "task_accuracy",
    "evaluate_ordinal_4l",
]

NAME = "ordinal-4l"
N_CTX = 32


def ordinal_config(*, init_weights: bool = False) -> Any:
    """The architecture of ``ordinal-4l`` as a ``HookedTransformerConfig`` (TransformerLens 3.x;
    TransformerLens 4 has none: ``UnsupportedError``; the fields are ``ordinal_fields``).

    Args:
        init_weights: initialise the weights (training) or leave them for a load (loading).
    """
    return compat.tl.hooked_config_class()(**ordinal_fields(init_weights=init_weights))


def ordinal_fields(*, init_weights: bool = False) -> dict[str, Any]:
    """The config fields of ``ordinal-4l`` (HookedTransformerConfig's names).

    Args:
        init_weights: initialise the weights (training) or leave them for a load (loading).

    Returns:
        A config: 4 layers, d_model 128, 4 heads of 32, d_mlp 512, LayerNorm, GELU,
        learned positions, n_ctx 32, BOS prepended by default.

    Example:
        >>> ordinal_fields()["d_vocab"] == len(data.vocabulary())
        True
    """
    return dict(
        n_layers=4,
        d_model=128,
        n_heads=4,
        d_head=32,
        d_mlp=512,
        d_vocab=len(data.vocabulary()),
        n_ctx=N_CTX,
        act_fn="gelu",
        normalization_type="LN",
        positional_embedding_type="standard",
        init_weights=init_weights,
        model_name=NAME,
        default_prepend_bos=True,
    )


def tokenizer_dir(directory: Path | str | None = None) -> Path:
    """Path of ``<directory>/tokenizers/ordinal-4l`` (the packaged zoo by default)."""
    return Path(directory or ZOO_DIR) / "tokenizers" / NAME


def write_tokenizer(directory: Path | str | None = None) -> Path:
    """Save ``ordinal_data.build_tokenizer()`` with ``save_pretrained``; returns the folder."""
    path = tokenizer_dir(directory)
    path.mkdir(parents=True, exist_ok=True)
    # save beside, then move file by file: a loader never sees a half-written file
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{NAME}.") as tmp:
        data.build_tokenizer().save_pretrained(tmp)
        # transformers 5 records its internal class name ("TokenizersBackend"), which 4.x
        # cannot resolve; the public alias loads in both. add_bos_token documents that the
        # post-processor prepends BOS (and spares TransformerLens a reload to enforce it).
        config_file = Path(tmp) / "tokenizer_config.json"
        config = json.loads(config_file.read_text())
        config.update(tokenizer_class="PreTrainedTokenizerFast", add_bos_token=True)
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), path / name)
    return path


def read_tokenizer(directory: Path | str | None = None) -> PreTrainedTokenizerBase:
    """Load the saved tokenizer offline (``PreTrainedTokenizerFast.from_pretrained(dir)``)."""
    path = tokenizer_dir(directory)
    if not (path / "tokenizer.json").is_file():
        raise ModelLoadError(
            f"no tokenizer for zoo model {NAME!r} at {path}; train it with "
            f"`python -m tl_interp.models.train {NAME} --out {path.parent.parent}`"
        )
    return PreTrainedTokenizerFast.from_pretrained(str(path), local_files_only=True)


def load_ordinal_4l(*, directory: Path | str | None = None) -> torch.nn.Module:
    """Load ``ordinal-4l`` with its tokenizer, eval mode, CPU.

    Args:
        directory: where the weights, card and tokenizer live; default the packaged zoo.

    Returns:
        The model, with its card as ``model.card``.

    Example:
        >>> model = load_ordinal_4l()
        >>> model.to_str_tokens("after july comes")
        ['<bos>', 'after', 'july', 'comes']
    """
    weights = read_weights(NAME, directory)  # verifies every file the card lists, tokenizer too
    model = compat.tl.build_from_fields(ordinal_fields(init_weights=False), weights,
                                        tokenizer=read_tokenizer(directory), name=NAME)
    model.card = read_card(NAME, directory)
    return model.eval()


@checked
def encode(
    tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, " batch"]]:
    """Tokenize prompts with BOS, right-padded, and find each row's last real token.

    Args:
        tokenizer: the ``ordinal-4l`` tokenizer (it prepends BOS itself).
        prompts: whitespace-separated prompts.

    Returns:
        ``(tokens, last)``: ids ``(batch, pos)`` and the index of each row's last non-pad
        token ``(batch,)``, where the answer is predicted.

    Example:
        >>> tokens, last = encode(data.build_tokenizer(), ["after one comes", "one , two ,"])
        >>> last.tolist()
        [3, 4]
    """
    batch = tokenizer(list(prompts), return_tensors="pt", padding=True)
    return batch["input_ids"], batch["attention_mask"].sum(-1) - 1


@checked
def answer_logits(
    model: torch.nn.Module, tokens: Int[Tensor, "batch pos"], last: Int[Tensor, " batch"]
) -> Float[Tensor, "batch d_vocab"]:
    """Logits at each row's last real token (right padding never reaches them: causal mask).

    Args:
        model: the model.
        tokens: right-padded ids from ``encode``.
        last: index of each row's last real token.

    Returns:
        ``(batch, d_vocab)`` logits predicting the answer.

    Example:
        >>> logits = answer_logits(model, *encode(model.tokenizer, ["after one comes"]))  # doctest: +SKIP
    """
    logits = model(tokens, return_type="logits")
    return logits[torch.arange(tokens.shape[0]), last]


def task_accuracy(
    model: torch.nn.Module,
    pairs: Sequence[tuple[str, str]],
    *,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> tuple[float, float]:
    """Top-1 accuracy and mean cross-entropy of the answer token over ``(prompt, answer)`` pairs.

    Args:
        model: the model.
        pairs: e.g. ``ordinal_tasks("heldout")["months"]``.
        tokenizer: default ``model.tokenizer``.

    Returns:
        ``(accuracy, loss)``; loss in nats.

    Example:
        >>> acc, loss = task_accuracy(model, data.ordinal_tasks("heldout")["months"])  # doctest: +SKIP
    """
    tok = tokenizer or model.tokenizer
    tokens, last = encode(tok, [p for p, _ in pairs])
    answers = torch.tensor(tok.convert_tokens_to_ids([a for _, a in pairs]))
    with torch.no_grad():
        logits = answer_logits(model, tokens, last)
    loss = nn.functional.cross_entropy(logits, answers)
    return float((logits.argmax(-1) == answers).float().mean()), float(loss)


def evaluate_ordinal_4l(
    model: torch.nn.Module, *, tokenizer: PreTrainedTokenizerBase | None = None
) -> dict[str, Any]:
    """Accuracy and loss per split and task, and per held-out template (the card's numbers).

    Args:
        model: the model.
        tokenizer: default ``model.tokenizer``.

    Returns:
        ``{split: {"n", "accuracy", "loss", "overall_accuracy", "overall_loss"}}`` for
        ``train``, ``test`` and ``heldout`` (per-task dicts keyed like ``ordinal_tasks``),
        and ``heldout_accuracy_by_template`` (``"<domain>: <template>"`` -> accuracy);
        values rounded to 4 decimals.

    Example:
        >>> evaluate_ordinal_4l(load_ordinal_4l())["heldout"]["accuracy"]["months"]  # doctest: +SKIP
        1.0
    """
    tok = tokenizer or model.tokenizer
    out: dict[str, Any] = {}
    for split in ("train", "test", "heldout"):
        tasks = ordinal_tasks(split)
        per_task = {t: task_accuracy(model, pairs, tokenizer=tok) for t, pairs in tasks.items()}
        acc, loss = task_accuracy(model, [pair for pairs in tasks.values() for pair in pairs], tokenizer=tok)
        out[split] = {
            "n": {t: len(p) for t, p in tasks.items()},
            "accuracy": {t: round(a, 4) for t, (a, _) in per_task.items()},
            "loss": {t: round(l, 4) for t, (_, l) in per_task.items()},
            "overall_accuracy": round(acc, 4),
            "overall_loss": round(loss, 4),
        }
    by_template: dict[str, float] = {}
    heldout = ordinal_examples("heldout")
    for domain, templates in data.HELDOUT_TEMPLATES.items():
        for template in templates:
            pairs = [(e.prompt, e.answer) for e in heldout if e.template == template and e.domain == domain]
            by_template[f"{domain}: {template}"] = round(task_accuracy(model, pairs, tokenizer=tok)[0], 4)
    out["heldout_accuracy_by_template"] = by_template
    return out
