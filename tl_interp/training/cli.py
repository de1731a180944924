"""The one training command: ``python -m tl_interp.models.train NAME`` (or ``tl-interp train NAME``).

A zoo model's name trains it (``TRAINERS``) and writes ``DIR/weights/NAME.safetensors`` and
``DIR/cards/NAME.json`` (plus ``DIR/tokenizers/NAME/`` for ordinal-4l); DIR defaults to the
packaged zoo, ``tl_interp/models/zoo``. A bundled SAE's name (``SAE_NAMES``) trains it with
sae-lens and writes ``DIR/NAME/`` (default: the packaged ``tl_interp/models/saes``). A bundled
tuned lens's name (``LENS_NAMES``) trains its translators (``tl_interp.training.lens``) and writes
``DIR/NAME/`` (default: the packaged ``tl_interp/models/lenses``).
The same name, steps, seed and thread count give bit-identical weights.
"""

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from tl_interp.lens._translators import LENS_NAMES
from tl_interp.models.saes import SAE_NAMES
from tl_interp.models.zoo import ordinal
from tl_interp.models.zoo._store import write_card, write_weights
from tl_interp.training import induction, s5_mlp
from tl_interp.training import ordinal as ordinal_training
from tl_interp.training.common import fixed_threads

__all__ = ["TRAINERS", "DEFAULT_STEPS", "main"]

TRAINERS: dict[str, Callable[..., tuple[nn.Module, dict[str, Any]]]] = {
    "induction-2l": induction.train_induction_2l,
    "s5-mlp": s5_mlp.train_s5_mlp,
    "ordinal-4l": ordinal_training.train_ordinal_4l,
}
DEFAULT_STEPS = {
    "induction-2l": induction.DEFAULT_STEPS,
    "s5-mlp": s5_mlp.DEFAULT_STEPS,
    "ordinal-4l": ordinal_training.DEFAULT_STEPS,
}


def _parser(names: Sequence[str], *, sae: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tl_interp.models.train",
        description="Retrain a bundled SAE with sae-lens's SAETrainer." if sae else "Retrain a bundled zoo model.",
    )
    parser.add_argument("name", choices=sorted(names))
    parser.add_argument("--steps", type=int, default=None, help="default: per model")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="default: the packaged directory")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the weights depend on it)")
    if sae:
        parser.add_argument("--n-train", type=int, default=None, help="training sequences (default: per SAE)")
        parser.add_argument("--n-heldout", type=int, default=None, help="held-out sequences measured")
    return parser


def _train_sae(argv: Sequence[str]) -> int:
    from tl_interp.training.saes import train_sae, write_sae

    args = _parser(SAE_NAMES, sae=True).parse_args(argv)
    with fixed_threads(args.threads):
        sae, card = train_sae(args.name, seed=args.seed, steps=args.steps, n_train=args.n_train,
                              n_heldout=args.n_heldout)
    folder = write_sae(args.name, sae, card, args.out)
    print(f"wrote {folder} ({sum(p.stat().st_size for p in folder.iterdir())} bytes)")
    print(json.dumps(card["evaluation"]))
    return 0


def _train_lens(argv: Sequence[str]) -> int:
    from tl_interp.training.lens import SPECS, train_tuned_lens, write_lens

    parser = _parser(list(SPECS), sae=True)
    parser.description = "Retrain a bundled tuned lens (per-layer translators, KL to the final distribution)."
    args = parser.parse_args(argv)
    with fixed_threads(args.threads):
        translators, card = train_tuned_lens(args.name, seed=args.seed, steps=args.steps, n_train=args.n_train,
                                             n_heldout=args.n_heldout)
    folder = write_lens(args.name, translators, card, args.out)
    print(f"wrote {folder} ({sum(p.stat().st_size for p in folder.iterdir())} bytes)")
    print(json.dumps(card["evaluation"]))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; see the module docstring. Returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in SAE_NAMES:
        return _train_sae(argv)
    if argv and argv[0] in LENS_NAMES:
        return _train_lens(argv)
    args = _parser(list(TRAINERS), sae=False).parse_args(argv)
    steps = args.steps if args.steps is not None else DEFAULT_STEPS[args.name]
    with fixed_threads(args.threads):  # determinism, and a fair share of a shared machine
        model, card = TRAINERS[args.name](steps=steps, seed=args.seed)
    path = write_weights(args.name, model, args.out)
    files = [f"weights/{path.name}"]
    if args.name == ordinal.NAME:  # the one zoo model that ships its own tokenizer
        folder = ordinal.write_tokenizer(args.out)
        files += [f"tokenizers/{ordinal.NAME}/{p.name}" for p in sorted(folder.iterdir()) if p.is_file()]
    card_file = write_card(args.name, card, args.out, files=files)
    print(f"wrote {path} ({path.stat().st_size} bytes) and {card_file}")
    print({k: v for k, v in card["evaluation"].items() if not k.endswith("_scores")})
    return 0
