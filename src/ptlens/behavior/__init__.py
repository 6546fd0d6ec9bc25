"""Behaviour: the lineage's models answer the same problems; accuracy, pass@k, diversity, confidence, length.

problems → prompts → samples (+ token log-probs, entropy) → grades → metrics. Nothing here
imports torch until a model is loaded.
"""

from ptlens.behavior.grading import Grade, answer_key, grade
from ptlens.behavior.metrics import ProblemSamples, compare_models, maj_at_k, pass_at_k
from ptlens.behavior.problems import Problem, builtin_problems, load_problems
from ptlens.behavior.run import BehaviorConfig, BehaviorResult, SampleRecord, load_samples, run_behavior

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
