"""One text -> exactly one token id: the single lookup behind every single-token argument.

Answers (``lens`` / ``lens.dla``, ``steering.evaluate``, feature cards), token finders
(``positions.first``) and target tokens all name a token by its text; a text that is several
tokens, or that only maps to the tokenizer's unknown token, would silently score the wrong
token, so both are refused here with the pieces the tokenizer made and the usual fix.
"""

from typing import Any

from tl_interp.errors import InputError

__all__ = ["single_token"]


def single_token(model: Any, text: str, what: str, *, noun: str = "answer") -> int:
    """The one token id of ``text`` under ``model.tokenizer`` (no special tokens added).

    Args:
        model: any model with a transformers tokenizer at ``model.tokenizer``.
        text: the token's text (BPE vocabularies usually want a leading space).
        what: the start of an error message, naming the argument (``"answers"``).
        noun: what the caller calls a token in the fix (``"give a single-token {noun}"``).

    Returns:
        The token id.

    Raises:
        InputError: no tokenizer, a text of several (or no) tokens, or a text that maps to the
            unknown token.

    Example:
        >>> from tl_interp.models import load
        >>> model = load("ordinal-4l")
        >>> single_token(model, "four", "answers") == model.to_single_token("four")
        True
        >>> single_token(model, "four five", "answers")
        Traceback (most recent call last):
        ...
        tl_interp.errors.InputError: answers: 'four five' is 2 tokens ['four', 'five'], not one; give a single-token answer (BPE vocabularies usually want a leading space, e.g. ' four')
    """
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise InputError(f"{what}: the model has no tokenizer to read {text!r} with; give the token id instead")
    ids = list(tok(text, add_special_tokens=False)["input_ids"])
    if len(ids) != 1:
        first = text.split()[0] if text.split() else "four"
        hint = f" (BPE vocabularies usually want a leading space, e.g. ' {first}')" if not text.startswith(" ") else ""
        raise InputError(f"{what}: {text!r} is {len(ids)} tokens {tok.convert_ids_to_tokens(ids)}, not one; "
                         f"give a single-token {noun}{hint}")
    unk = getattr(tok, "unk_token_id", None)
    if unk is not None and int(ids[0]) == unk and text.strip() != str(getattr(tok, "unk_token", "")):
        raise InputError(f"{what}: {text!r} is not in the model's vocabulary (it maps to the unknown token "
                         f"{tok.unk_token!r})")
    return int(ids[0])
