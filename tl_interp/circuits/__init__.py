"""Circuits: the graph of heads and MLPs, edge attribution, exact batched faithfulness.

``graph(model)`` names every edge as MIB does; ``attribute`` scores edges (EAP, EAP-IG, exact
single-edge patching); ``faithfulness`` evaluates many circuits exactly, on the engine;
``Circuit`` builds circuits from scores (top-n, greedy) and reads/writes MIB circuit files;
``faithfulness_curve`` gives MIB's curve (f per budget, CPR, CMD) with intervals, and
``stability`` edge intervals and top-k survival over resampled prompts, ``circuit_intervals``
each circuit's faithfulness with an interval over resampled prompts.
"""

from tl_interp.circuits._graph import Graph, graph
from tl_interp.circuits._faithfulness import Faithfulness, faithfulness
from tl_interp.circuits._scores import EdgeScores, attribute
from tl_interp.circuits._circuit import Circuit
from tl_interp.circuits._curve import MIB_BUDGETS, FaithfulnessCurve, faithfulness_curve
from tl_interp.circuits._stability import EdgeStability, circuit_intervals, stability

__all__ = ["Graph", "graph", "EdgeScores", "attribute", "Faithfulness", "faithfulness",
           "Circuit", "faithfulness_curve", "FaithfulnessCurve", "MIB_BUDGETS", "stability", "EdgeStability",
           "circuit_intervals"]
