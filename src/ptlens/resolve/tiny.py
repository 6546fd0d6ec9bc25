"""The default lineage: the tiny lab lineage shipped in the package (``ptlens/data/tiny``).

``ptlens lab --ship`` writes it; any other ``ptlens lab`` output folder has the same
``lineage.json`` manifest and can be named with ``--preset path/to/lineage.json``.
"""

from __future__ import annotations

import json
from pathlib import Path

from ptlens.errors import PtlensError
from ptlens.resolve.presets import Preset, PresetStage, StageFacts

SHIPPED = Path(__file__).resolve().parent.parent / "data" / "tiny"
NAMES = ("tiny", "tiny-trajectory")
"""The shipped lab run: its four final stages, or every checkpoint it saved from base on."""


def shipped_manifest() -> Path | None:
    f = SHIPPED / "lineage.json"
    return f if f.is_file() else None


def preset_from_manifest(manifest: Path, name: str | None = None, trajectory: bool = False) -> Preset:
    """A lineage.json written by ``ptlens lab`` as a preset: stage paths are relative to it.

    ``trajectory``: every saved checkpoint from the end of pretraining on (intermediate
    SFT, DPO and GRPO steps included), for the report's convergence curves.
    """
    try:
        data = json.loads(manifest.read_text())
        entries = data["stages"]
        if trajectory:
            entries = data["trajectory"]
            first = next(i for i, t in enumerate(entries) if t["final"])
            entries = entries[first:]
        stages = []
        for s in entries:
            facts = {k: v for k, v in s.get("facts", {}).items() if k in StageFacts.__dataclass_fields__}
            stages.append(PresetStage(s["label"], str((manifest.parent / s["path"]).resolve()), StageFacts(**facts)))
    except FileNotFoundError:
        raise PtlensError(f"{manifest}: no such lineage manifest") from None
    except (ValueError, KeyError, TypeError, StopIteration) as e:
        raise PtlensError(f"{manifest}: not a ptlens lab lineage.json ({type(e).__name__}: {e})") from None
    return Preset(name=name or str(manifest), description=data.get("description", "ptlens lab lineage"),
                  stages=tuple(stages))


def tiny_preset(name: str = "tiny") -> Preset:
    manifest = shipped_manifest()
    if manifest is None:
        raise PtlensError(f"the embedded tiny lineage is missing from this installation ({SHIPPED}); "
                          "reinstall ptlens, or write it with `ptlens lab --ship`")
    return preset_from_manifest(manifest, name=name, trajectory=name == "tiny-trajectory")
