"""Mechanism: which part of each stage's update carries the behaviour change.

Same inputs through A and B → per-layer activation diffs (CKA, relative change, logit lens,
activation difference lens); A + ΔW[part] → behaviour of the hybrids (delta transplants).
Definitions and user guide: docs/MECHANISM.md.
"""

_RUN = ("MechanismConfig", "MechanismResult", "run_mechanism", "stored_mechanism")


def __getattr__(name: str):
    """The driver (``ptlens.mechanism.run``, which loads the sampling engines) loads on first use, so that the
    report, reading ``mechanism/summary.json`` through ``ptlens.report.mechanism``, never imports it."""
    if name in _RUN:
        from ptlens.mechanism import run

        return getattr(run, name)
    raise AttributeError(f"module 'ptlens.mechanism' has no attribute {name!r}")


__all__ = ["MechanismConfig", "MechanismResult", "run_mechanism", "stored_mechanism"]
