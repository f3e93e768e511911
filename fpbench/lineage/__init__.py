"""Model lineage: the LineageTracker graph (seed paper, sec. III-C), ancestry claims decided from a method's
scores (Table I's lineage tracking success rate) and lineage reconstruction from pairwise scores.

``tracker``, ``claims`` and ``reconstruct`` need only networkx and pandas; ``scoring`` and the command
(``python -m fpbench.lineage``) score a zoo's models with the cell runner.
"""

from fpbench.lineage.reconstruct import reconstruct, recovery
from fpbench.lineage.tracker import AncestryVerdict, LineageTracker, UnknownModel

__all__ = ["AncestryVerdict", "LineageTracker", "UnknownModel", "reconstruct", "recovery"]
