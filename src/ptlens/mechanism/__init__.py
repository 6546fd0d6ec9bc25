"""Mechanism: which part of each stage's update carries the behaviour change.

Same inputs through A and B → per-layer activation diffs (CKA, relative change, logit lens,
activation difference lens); A + ΔW[part] → behaviour of the hybrids (delta transplants).
Definitions: DESIGN.md "Mechanism"; user guide: docs/MECHANISM.md.
"""

from ptlens.mechanism.run import MechanismConfig, MechanismResult, run_mechanism, stored_mechanism

__all__ = ["MechanismConfig", "MechanismResult", "run_mechanism", "stored_mechanism"]
