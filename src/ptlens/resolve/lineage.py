"""From what the user typed to an ordered list of local checkpoints.

A SPEC is a local folder, a hub id, or ``id@revision``. Hub ids go through
``huggingface_hub`` into its normal cache, so ``HF_HOME``, ``HF_TOKEN`` and
``HF_HUB_OFFLINE`` behave as users expect from every other HF tool.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ptlens.errors import PtlensError
from ptlens.resolve.catalog import get_preset
from ptlens.resolve.presets import StageFacts

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+)?$")
_LABEL = re.compile(r"^[A-Za-z0-9][\w.\-]*$")


@dataclass
class Checkpoint:
    """One model snapshot of a lineage, resolved to a local folder."""

    label: str
    spec: str
    path: Path | None = None
    repo_id: str | None = None
    revision: str | None = None
    resolved_revision: str | None = None
    name: str = ""
    facts: StageFacts = field(default_factory=StageFacts)
    step: int | None = None
    """Optimizer step within its stage, when the checkpoint records it (``ptlens lab`` checkpoints do)."""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["path"] = str(self.path) if self.path else None
        d["facts"] = self.facts.to_dict()
        return d


@dataclass
class Lineage:
    checkpoints: list[Checkpoint]
    preset: str | None = None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.checkpoints]

    def to_dict(self) -> dict:
        return {"preset": self.preset, "checkpoints": [c.to_dict() for c in self.checkpoints]}

    @classmethod
    def from_dict(cls, d: dict) -> "Lineage":
        cps = []
        for c in d["checkpoints"]:
            c = dict(c)
            c["path"] = Path(c["path"]) if c.get("path") else None
            c["facts"] = StageFacts(**c.get("facts", {}))
            cps.append(Checkpoint(**c))
        return cls(checkpoints=cps, preset=d.get("preset"))


def parse_model_args(args: list[str]) -> list[Checkpoint]:
    """Parse ``label=SPEC`` items in order; labels may repeat (a training trajectory)."""
    out = []
    for item in args:
        label, sep, spec = item.partition("=")
        if not sep or not label or not spec:
            raise PtlensError(f"--models expects label=SPEC items, got {item!r} (e.g. sft=allenai/Llama-3.1-Tulu-3-8B-SFT)")
        if not _LABEL.match(label):
            raise PtlensError(f"bad stage label {label!r} in {item!r}: use letters, digits, '_', '-', '.'")
        out.append(Checkpoint(label=label, spec=spec))
    if len(out) < 2:
        raise PtlensError("a lineage needs at least two checkpoints (e.g. --models base=PATH sft=PATH)")
    return out


def _split_spec(spec: str) -> tuple[str, str | None]:
    repo, sep, rev = spec.partition("@")
    return repo, (rev if sep else None)


def _assign_names(cps: list[Checkpoint]) -> None:
    """Unique display names: the label, disambiguated by revision or position when it repeats."""
    counts = Counter(c.label for c in cps)
    seen: Counter = Counter()
    for i, c in enumerate(cps):
        if counts[c.label] == 1:
            c.name = c.label
            continue
        seen[c.label] += 1
        c.name = f"{c.label}@{c.revision}" if c.revision else f"{c.label}#{seen[c.label]}"
    dup = [n for n, k in Counter(c.name for c in cps).items() if k > 1]
    if dup:
        raise PtlensError(f"checkpoints {dup} appear twice in the lineage with the same revision")


def resolve_checkpoint(cp: Checkpoint, *, allow_pickle: bool = False, download: bool = True) -> Checkpoint:
    local = Path(cp.spec).expanduser()
    if local.exists():
        if not local.is_dir():
            raise PtlensError(f"{cp.spec}: is a file, not a model folder (expected a folder with config.json and *.safetensors)")
        cp.path = local.resolve()
        return cp
    repo, rev = _split_spec(cp.spec)
    if not _HUB_ID.match(repo) or cp.spec.startswith((".", "/", "~")):
        raise PtlensError(f"{cp.spec}: no such folder, and not a hub id (expected ORG/NAME or ORG/NAME@REVISION)")
    cp.repo_id, cp.revision = repo, rev
    if download:
        from ptlens.resolve.hub import fetch

        cp.path, cp.resolved_revision = fetch(repo, rev, allow_pickle=allow_pickle)
    return cp


def resolve_lineage(
    models: list[str] | None = None,
    preset: str | None = None,
    *,
    allow_pickle: bool = False,
    download: bool = True,
) -> Lineage:
    """Resolve ``--models`` items or a ``--preset`` (exactly one of them) to local checkpoints."""
    if models and preset:
        raise PtlensError("give either --preset or --models, not both")
    if not models and not preset:
        preset = "tiny"
    if preset:
        p = get_preset(preset)
        cps = [Checkpoint(label=s.label, spec=s.spec, facts=s.facts) for s in p.stages]
    else:
        cps = parse_model_args(list(models or []))
    for cp in cps:
        _, rev = _split_spec(cp.spec) if not Path(cp.spec).expanduser().exists() else (None, None)
        cp.revision = rev
    _assign_names(cps)
    for cp in cps:
        resolve_checkpoint(cp, allow_pickle=allow_pickle, download=download)
        if cp.path is not None:
            _attach_lab_facts(cp)
    return Lineage(checkpoints=cps, preset=preset)


def _attach_lab_facts(cp: Checkpoint) -> None:
    """A lab checkpoint carries its stage facts in ``ptlens_stage.json``; use them if present."""
    f = cp.path / "ptlens_stage.json" if cp.path else None
    if f is None or not f.is_file():
        return
    try:
        data = json.loads(f.read_text())
        if isinstance(data.get("step"), int):
            cp.step = data["step"]
        if not cp.facts.source:
            cp.facts = StageFacts(**{k: v for k, v in data.get("facts", {}).items() if k in StageFacts.__dataclass_fields__})
    except (ValueError, TypeError, AttributeError) as e:
        raise PtlensError(f"{f}: unreadable stage facts ({e})") from None
