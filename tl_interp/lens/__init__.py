"""Reading the residual stream: the logit lens, the tuned lens and direct logit attribution.

- ``logit_lens(model, inputs, ...)``: each layer's residual stream through the model's own
  final norm and unembedding (``LensResult``);
- ``tuned_lens(model, inputs, translators=...)``: the same after trained per-layer affine
  translators (Belrose et al. 2023); ``Translators``, ``load_translators`` and the bundled
  ``LENS_NAMES``;
- ``direct_logit_attribution(model, inputs, answers, ...)``: each component's direct
  contribution to an answer's logit (or a logit difference) through the final norm's frozen
  scale, as TransformerLens's cache helpers define it (``DLAResult``).

See docs/lens.md for the formulas and how they differ from TransformerLens.
"""

from tl_interp.lens._dla import direct_logit_attribution
from tl_interp.lens._logit import logit_lens, tuned_lens
from tl_interp.lens._result import DLAResult, LensResult
from tl_interp.lens._translators import LENS_NAMES, Translators, load_translators

__all__ = ["logit_lens", "tuned_lens", "direct_logit_attribution", "LensResult", "DLAResult", "Translators",
           "load_translators", "LENS_NAMES"]
