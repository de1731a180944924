"""Typed results: values with named axes, labels, extras and provenance; rankings of them.

Every study returns a ``Result`` (``_result.py``) or a subclass, and every result that can be
ranked answers ``top(k)`` with a ``Ranking`` (``_ranking.py``; docs/vocabulary.md, "Top-k").
Both live here, in the results layer, and this package is their one public home:
``ti.results.Result``, ``ti.results.Ranking``, ``ti.results.Provenance``.

Example:
    >>> import torch, tl_interp as ti
    >>> r = ti.results.Result(torch.tensor([[1.0, -2.0]]), ("layer", "pos"), "logit diff", ti.results.Provenance("m"))
    >>> type(r.top(1)) is ti.results.Ranking
    True
"""

from tl_interp.results._ranking import Ranking
from tl_interp.results._result import Provenance, Result, prompt_hash, register_result
# the results layer's internal API (every study's reprs use them), not part of __all__
from tl_interp.results._result import REPR_MAX_CHARS, bounded, number, short  # noqa: F401

__all__ = ["Provenance", "Ranking", "Result", "prompt_hash", "register_result"]
