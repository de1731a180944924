"""Studies built only from interventions, forward passes and metrics.

Exposed at the top level: ``ti.patching``, ``ti.ablation`` (more to come: steering, geometry,
weights).
"""
