"""The engine's fast paths: each is exact, has its own eligibility check, and falls back.

- ``mid_stack``: start a pass at the first edited layer from the base run's residual;
- ``read_only``: compute the final residual and unembed only the positions the metric reads
  (a plain function's are traced: ``engine.reads``);
- ``prefix_kv``: run only positions from the first one any cell of the pass changes, against
  the base run's cached keys and values for the positions before it (and its logits there, for
  a metric of the full logits);
- ``split_final``: run the final block's queries, attention output and MLP at the last
  position alone (its keys and values for earlier positions come from ``ln1`` + the key/value
  projections);
- ``skip_unchanged``: a cell whose edit writes exactly the values already there takes the
  base run's value without a pass (and tells ``prefix_kv`` where its edit starts);
- ``head_columns``: with the read-only head, unembed only the vocabulary entries the metric
  reads (a logit difference's answers; a plain function's traced indices).

Each module's ``reason(...)`` returns why the path can't be taken (recorded in provenance), or
None; the exact full forward pass is the fallback of every one.
"""

from tl_interp.engine.paths import head_columns, mid_stack, prefix_kv, read_only, skip_unchanged, split_final

__all__ = ["mid_stack", "read_only", "prefix_kv", "split_final", "skip_unchanged", "head_columns"]
