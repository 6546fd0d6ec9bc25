"""``ptlens lab``: a tiny post-training lab (base → SFT → DPO → RLVR) trained with TRL on CPU.

Its default run ships inside the package as the ``tiny`` lineage; ``--controlled`` adds the
comparison Tülu cannot give: more SFT vs GRPO from the same SFT checkpoint on the same prompts.
Needs the ``lab`` extra (``pip install 'ptlens[lab]'``).
"""

from ptlens.lab.config import ControlledPlan, DPOPlan, GRPOPlan, LabConfig, ModelShape, PretrainPlan, SFTPlan
from ptlens.lab.runner import require_lab_deps, run_controlled, run_lab

__all__ = [
    "ControlledPlan", "DPOPlan", "GRPOPlan", "LabConfig", "ModelShape", "PretrainPlan", "SFTPlan",
    "require_lab_deps", "run_controlled", "run_lab",
]
