"""What a stored result was made from, and whether it may be reused: one rule for every step.

Every step stores, beside its results, a **fingerprint**: a flat dict of the settings that change its
numbers, plus ``"inputs"``, one entry per checkpoint with its identity (name, folder, resolved revision)
and its files. A file is known by its size, modification time (ns), inode and, for safetensors, the
SHA-256 of its header (names, dtypes, shapes, offsets); no weight byte is read. Stored results are
reused (or resumed) only when the whole fingerprint is equal.

Why metadata and not a content hash: hashing reads every byte; SHA-256 ran at 0.27–0.34 GB/s on one
(busy) core of the development machine, 40–50 min per 810 GB checkpoint of a 405B lineage, on every
rerun, for a step that otherwise reuses its results in a second. Any write to a file moves its
modification time (and ``ptlens lab``, ``save_pretrained`` and ``safetensors`` write whole files); a
copy that keeps the times (``cp -p``, ``rsync -a``) gets a new inode. What goes unseen: bytes changed
in place with the modification time set back by hand, on the same inode.

When the inputs differ (:func:`compare`), callers apply the rule documented in docs/OUTPUTS.md: a
checkpoint whose *files* changed under the same name, folder and revision (retrained or edited in
place) is refused, one line naming the checkpoint and file, until ``--overwrite``; other settings or
another lineage are what the command asked for (weights and mechanism recompute; behaviour refuses,
as its samples cannot be mixed).
"""

from __future__ import annotations

import hashlib
import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ptlens.errors import PtlensError

INPUTS = "inputs"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".index.json")
"""Files a weight scan reads (with ``config.json``); behaviour and mechanism depend on every file of the folder."""
_NOT_MODEL = ("readme", "license", ".")


def _is_weight_file(name: str) -> bool:
    return name == "config.json" or name.endswith(WEIGHT_SUFFIXES)


def _is_model_file(name: str) -> bool:
    low = name.lower()
    return not low.startswith(_NOT_MODEL) and not low.endswith(".md")


def _header_sha256(path: Path) -> str | None:
    """SHA-256 of a safetensors file's length prefix and JSON header; None when it has none."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return None
            (n,) = struct.unpack("<Q", head)
            if n > 100 << 20:
                return None  # not a safetensors header: the size and times still identify the file
            return hashlib.sha256(head + f.read(n)).hexdigest()[:16]
    except OSError:
        return None


def file_fingerprint(path: Path) -> list:
    """[size, modification time in ns, inode, header hash or None] of one file (symlinks followed: the HF cache)."""
    st = path.stat()
    head = _header_sha256(path) if path.name.endswith(".safetensors") else None
    return [st.st_size, st.st_mtime_ns, st.st_ino, head]


def checkpoint_files(folder: str | Path, part: str = "model") -> dict[str, list]:
    """Every top-level file of a checkpoint folder a step depends on, by name.

    ``part``: ``"weights"`` (weight files, their index and config.json: what the scan reads) or ``"model"``
    (every file but README/LICENSE/*.md and hidden ones: tokenizer, chat template, generation config too).
    """
    keep = _is_weight_file if part == "weights" else _is_model_file
    root = Path(folder)
    out = {}
    for p in sorted(root.iterdir()):
        if keep(p.name) and p.is_file():
            out[p.name] = file_fingerprint(p)
    return out


def inputs_of(lineage, part: str = "model") -> list[dict]:
    """The ``"inputs"`` entry of a fingerprint: each checkpoint's identity and files (a few stat calls and
    a header read per file)."""
    return [{"name": c.name, "path": str(c.path), "resolved_revision": c.resolved_revision,
             "files": checkpoint_files(c.path, part) if c.path is not None else {}}
            for c in lineage.checkpoints]


def fingerprint(lineage, settings: dict, part: str = "model") -> dict:
    """Settings plus the lineage's inputs, as stored (JSON types: tuples become lists)."""
    return json.loads(json.dumps({**settings, INPUTS: inputs_of(lineage, part)}))


@dataclass
class Comparison:
    """How a stored fingerprint differs from the current one (all empty: the same)."""

    settings: list[str] = field(default_factory=list)
    """Setting names that differ (``inputs`` excluded)."""
    lineage: bool = False
    """Other checkpoints (names, folders or revisions): another lineage, not a changed one."""
    files: list[str] = field(default_factory=list)
    """One phrase per changed checkpoint of the same identity: ``sft: model.safetensors modified``."""

    @property
    def same(self) -> bool:
        return not (self.settings or self.lineage or self.files)

    def what(self) -> str:
        """What differs, in a few words (for 'made with other …' messages)."""
        parts = list(self.settings) + (["lineage"] if self.lineage else []) + self.files
        return ", ".join(parts[:4]) + (f" … ({len(parts)} in all)" if len(parts) > 4 else "")

    def refuse_changed(self, where: str | Path, flag: str = "--overwrite") -> None:
        """A PtlensError when a checkpoint's files changed since ``where`` was written; nothing otherwise."""
        if self.files:
            shown = "; ".join(self.files[:3]) + (f"; … {len(self.files) - 3} more" if len(self.files) > 3 else "")
            raise PtlensError(f"{where} was made from checkpoint files that have changed since ({shown}); "
                              f"pass {flag} to recompute, or use another --output-dir")


def compare(stored: dict | None, want: dict) -> Comparison:
    """Compare a stored fingerprint with the current one (only the current one's keys: a stored file may hold more).

    A stored one without inputs (written before ptlens recorded them) differs in ``checkpoint files (not
    recorded)``: reused never, refused only where other settings are."""
    if not isinstance(stored, dict):
        return Comparison(settings=[k for k in want if k != INPUTS], lineage=True)
    out = Comparison(settings=[k for k in want if k != INPUTS and stored.get(k) != want[k]])
    have, now = stored.get(INPUTS), want.get(INPUTS, [])
    if have is None:
        out.settings.append("checkpoint files (not recorded)")
        return out
    ident = ("name", "path", "resolved_revision")
    if not isinstance(have, list) or [[h.get(k) for k in ident] if isinstance(h, dict) else None for h in have] != [
            [n[k] for k in ident] for n in now]:
        out.lineage = True
        return out
    for h, n in zip(have, now):
        if h.get("files") != n["files"]:
            out.files.append(f"{n['name']}: {describe_files(h.get('files') or {}, n['files'])}")
    return out


def describe_files(old: dict, new: dict) -> str:
    """``model.safetensors modified 16:20:01 → 16:25:13`` and the like: what happened to which files."""
    parts = []
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a == b:
            continue
        if a is None or b is None:
            parts.append(f"{name} {'added' if a is None else 'removed'}")
            continue
        how = []
        if a[0] != b[0]:
            how.append(f"size {a[0]} → {b[0]} B")
        if a[3] != b[3]:
            how.append("header")
        if a[1] != b[1]:
            how.append(f"modified {_clock(a[1])} → {_clock(b[1])}")
        if a[2] != b[2]:
            how.append("replaced (new inode)")
        parts.append(f"{name} {', '.join(how)}")
    return ", ".join(parts[:3]) + (f", … {len(parts) - 3} more files" if len(parts) > 3 else "")


def _clock(ns: Any) -> str:
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ns / 1e9))
    except (TypeError, ValueError, OverflowError):
        return str(ns)


def check_stored(paths: Sequence[tuple[Path, str, dict]], overwrite: bool) -> None:
    """Before any work: refuse when a stored result in the output folder was made from checkpoint files that have
    changed since. ``paths``: (stored JSON file, key of its fingerprint or "" for the whole document, the current
    fingerprint); files absent or unreadable are skipped (their step recomputes)."""
    if overwrite:
        return
    from ptlens.io import read_json

    for path, key, want in paths:
        doc = read_json(path) if Path(path).is_file() else None
        if not isinstance(doc, dict):
            continue
        stored = doc.get(key) if key else doc
        if isinstance(stored, dict) and INPUTS in stored:
            compare(stored, want).refuse_changed(path)


def settings_of(config: Any, drop: Sequence[str] = ()) -> dict:
    """A config dataclass's fields as JSON types, without ``drop`` (options that do not change the numbers)."""
    from dataclasses import asdict

    return json.loads(json.dumps({k: v for k, v in asdict(config).items() if k not in drop}))

