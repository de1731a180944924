"""Statistics for studies, as ``ti.stats``: tests, corrections, effect sizes, intervals.

All functions accept numpy arrays or torch tensors, compute in float64 on CPU, refuse
NaN/Inf with an ``InputError`` (in the inputs, and in the values a statistic returns: a NaN or
inf statistic, null value or bootstrap replicate has no p-value or interval), and return torch
float64 tensors (0-d for scalars). Scale-free quantities (t, effect sizes) are computed at an
exact power-of-two unit scale, so any finite scale gives the same answer.

- ``paired_ttest(a, b, *, alternative)`` -> ``TTest`` (= ``scipy.stats.ttest_rel(a, b, axis=-1)``);
- ``correct(p_values, method)``: Bonferroni, Holm, Benjamini-Hochberg;
- ``cohens_d_paired(a, b)``, ``hedges_g(a, b)``: effect sizes;
- ``bootstrap_ci(statistic, *samples, ...)``, ``bootstrap_mean_ci(values, ...)``: percentile intervals;
- ``permutation_test(statistic, x, y, *, kind, alternative, ...)`` -> ``PermutationTest``
  with p = (1 + #{null >= observed}) / (B + 1) (never 0); ``permutation_indices`` gives the
  exact permutations it draws. Beyond STATS_API.md: ``permutations=`` (explicit or shared
  permutations), ``progress=``, and ``PermutationTest.vectorized`` (whether a batched null ran).

Example:
    >>> import torch
    >>> from tl_interp import stats
    >>> a = torch.tensor([[1.0, 2.0, 3.0, 4.0], [2.0, 2.5, 2.0, 3.5]])
    >>> t = stats.paired_ttest(a, torch.zeros(2, 4))
    >>> stats.correct(t.p_value, "bonferroni").shape
    torch.Size([2])
"""

from tl_interp.stats._bootstrap import (
    PreparedBootstrap,
    bootstrap_ci,
    bootstrap_indices,
    bootstrap_mean_ci,
    percentile_interval,
    register_bootstrap,
)
from tl_interp.stats._correct import correct
from tl_interp.stats._permutation import (
    PermutationTest,
    PreparedNull,
    permutation_indices,
    permutation_p_value,
    permutation_test,
    register_null,
)
from tl_interp.stats._tests import TTest, cohens_d_paired, hedges_g, paired_ttest

__all__ = [
    "paired_ttest",
    "TTest",
    "correct",
    "cohens_d_paired",
    "hedges_g",
    "bootstrap_ci",
    "bootstrap_mean_ci",
    "bootstrap_indices",
    "percentile_interval",
    "register_bootstrap",
    "PreparedBootstrap",
    "permutation_test",
    "PermutationTest",
    "permutation_indices",
    "permutation_p_value",
    "register_null",
    "PreparedNull",
]
