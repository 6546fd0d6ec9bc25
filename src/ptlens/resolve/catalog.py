"""Every lineage a name can stand for: the shipped tiny lineage, a ``ptlens lab`` manifest, or a hub preset.

Apart from ``presets`` (the hub lineages as data) and ``tiny`` (the shipped one), so neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from ptlens.errors import PtlensError
from ptlens.resolve import tiny
from ptlens.resolve.presets import PRESETS, Preset


def get_preset(name: str) -> Preset:
    if name in tiny.NAMES:
        return tiny.tiny_preset(name)
    if name.endswith(".json"):
        return tiny.preset_from_manifest(Path(name))
    try:
        return PRESETS[name]
    except KeyError:
        known = ", ".join([*tiny.NAMES, *PRESETS])
        raise PtlensError(f"unknown preset {name!r}; known presets: {known}, or the lineage.json of a `ptlens lab` "
                          "run") from None
