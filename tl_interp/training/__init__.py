"""Training of everything tl_interp bundles: the zoo models and the SAEs.

Loading and adapting live in ``tl_interp.models``; the runs that produced the packaged
weights live here, with one shared set of utilities (``common``: seeding and threads, the LR
schedule, provenance, card numbers). One command retrains any of them, deterministically:

    python -m tl_interp.models.train NAME [--steps N] [--seed S] [--out DIR]
    tl-interp train NAME ...                       (the same)

- ``induction``: ``induction-2l`` (objective with head dropout and a Hoyer penalty);
- ``s5_mlp``: ``s5-mlp``;
- ``ordinal``: ``ordinal-4l``;
- ``saes``: the bundled SAEs, with sae-lens's ``SAETrainer``;
- ``cli``: the command line.
"""

__all__ = ["TRAINERS", "main"]

from tl_interp.training.cli import TRAINERS, main  # noqa: E402
