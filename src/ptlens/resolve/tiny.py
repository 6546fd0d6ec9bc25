"""The default lineage: the tiny lab lineage shipped in the package, or a synthetic stand-in.

Until ``ptlens lab`` has produced a shipped lineage (``ptlens/data/tiny/lineage.json``), the
default run analyses a small synthetic Llama-shaped lineage with planted updates, generated
on first use into the user cache. Reports say which one they analysed.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ptlens.resolve.presets import Preset, PresetStage, StageFacts

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "tiny"
SYNTH_VERSION = "v1"


def shipped_manifest() -> Path | None:
    f = SHIPPED / "lineage.json"
    return f if f.is_file() else None


def _cache_root() -> Path:
    base = os.environ.get("PTLENS_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "ptlens")
    return Path(base)


def preset_from_manifest(manifest: Path) -> Preset:
    data = json.loads(manifest.read_text())
    stages = []
    for s in data["stages"]:
        facts = {k: v for k, v in s.get("facts", {}).items() if k in StageFacts.__dataclass_fields__}
        stages.append(PresetStage(s["label"], str((manifest.parent / s["path"]).resolve()), StageFacts(**facts)))
    return Preset(name="tiny", description=data.get("description", "tiny lab lineage"), stages=tuple(stages))


def synthetic_tiny(root: Path | None = None) -> Path:
    """Create (once) the synthetic stand-in lineage and return its folder."""
    from ptlens.synth import make_lineage

    root = root or _cache_root() / f"synthetic-tiny-{SYNTH_VERSION}"
    if not (root / "rlvr" / "config.json").is_file():
        tmp = root.with_name(root.name + ".tmp")
        make_lineage(tmp, seed=0)
        tmp.rename(root) if not root.exists() else None
    return root


def tiny_preset() -> Preset:
    manifest = shipped_manifest()
    if manifest is not None:
        return preset_from_manifest(manifest)
    root = synthetic_tiny()
    note = "synthetic stand-in: random Llama-shaped weights with planted updates, not trained"
    return Preset(
        name="tiny",
        description="synthetic tiny lineage (planted updates; the trained lab lineage is not shipped yet)",
        stages=tuple(PresetStage(s, str(root / s), StageFacts(notes=note)) for s in ("base", "sft", "dpo", "rlvr")),
    )
