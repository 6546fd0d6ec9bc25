"""Behaviour: the lineage's models answer the same problems; accuracy, pass@k, diversity, confidence, length.

problems → prompts → samples (+ token log-probs, entropy) → grades → metrics. Nothing here
imports torch until a model is loaded.
"""

from ptlens.behavior.grading import Grade, answer_key, grade
from ptlens.behavior.metrics import ProblemSamples, compare_models, maj_at_k, pass_at_k
from ptlens.behavior.problems import Problem, builtin_problems, load_problems
from ptlens.results.store import SampleRecord, load_samples

_DRIVER = {"BehaviorConfig": "ptlens.behavior.config", "BehaviorResult": "ptlens.behavior.run",
           "run_behavior": "ptlens.behavior.run"}


def __getattr__(name: str):
    """The sampling driver (``ptlens.behavior.run``) and its config load on first use, so that reading stored
    results (the report, ``ptlens.behavior.metrics``) never imports them."""
    if name in _DRIVER:
        import importlib

        return getattr(importlib.import_module(_DRIVER[name]), name)
    raise AttributeError(f"module 'ptlens.behavior' has no attribute {name!r}")


__all__ = [
    "BehaviorConfig",
    "BehaviorResult",
    "Grade",
    "Problem",
    "ProblemSamples",
    "SampleRecord",
    "answer_key",
    "builtin_problems",
    "compare_models",
    "grade",
    "load_problems",
    "load_samples",
    "maj_at_k",
    "pass_at_k",
    "run_behavior",
]
