"""Circuits: the graph of heads and MLPs, edge attribution, exact batched faithfulness.

``graph(model)`` names every edge as MIB does; ``attribute`` scores edges (EAP, EAP-IG, exact
single-edge patching); ``faithfulness`` evaluates many circuits exactly, on the engine.
"""

from tl_interp.circuits._graph import Graph, graph
from tl_interp.circuits._faithfulness import Faithfulness, faithfulness
from tl_interp.circuits._scores import EdgeScores, attribute

__all__ = ["Graph", "graph", "EdgeScores", "attribute", "Faithfulness", "faithfulness"]
