"""Lineage resolution: ``label=SPEC`` arguments or a preset → local checkpoint folders."""

from ptlens.resolve.lineage import Checkpoint, Lineage, parse_model_args, resolve_lineage
from ptlens.resolve.catalog import get_preset
from ptlens.resolve.presets import PRESETS, Preset, StageFacts

__all__ = [
    "PRESETS",
    "Checkpoint",
    "Lineage",
    "Preset",
    "StageFacts",
    "get_preset",
    "parse_model_args",
    "resolve_lineage",
]
