"""``ptlens lab``: a tiny post-training lab (base → SFT → DPO → RLVR) trained with TRL on CPU.

Its default run ships inside the package as the ``tiny`` lineage; ``--controlled`` adds the
comparison Tülu cannot give: more SFT vs GRPO from the same SFT checkpoint on the same prompts.
Needs the ``lab`` extra (``pip install 'ptlens[lab]'``).
"""

from ptlens.lab.config import ControlledPlan, DPOPlan, GRPOPlan, LabConfig, ModelShape, PretrainPlan, SFTPlan

__all__ = [
    "ControlledPlan", "DPOPlan", "GRPOPlan", "LabConfig", "ModelShape", "PretrainPlan", "SFTPlan",
    "require_lab_deps", "run_controlled", "run_lab",
]


def __getattr__(name: str):
    """The runner on first use: the CLI reads ``LabConfig`` at start-up for its options, and every command would
    otherwise import the training driver too."""
    if name in ("require_lab_deps", "run_controlled", "run_lab"):
        from ptlens.lab import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'ptlens.lab' has no attribute {name!r}")
