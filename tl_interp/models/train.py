"""``python -m tl_interp.models.train NAME [...]``: retrain a bundled zoo model or SAE.

A thin entry point; the trainers live in ``tl_interp.training`` (see ``tl_interp.training.cli``
for the options).
"""

import sys

from tl_interp.training.cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
