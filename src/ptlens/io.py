"""Atomic output: every file ptlens writes appears whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[Any]:
    """Write to a temp file beside ``path`` and rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """mkstemp creates 0600 files; results are meant to be shared, so honour the umask instead."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=False, default=_json_default)
        f.write("\n")


def read_json(path: str | Path) -> Any | None:
    """A stored JSON file, or None when it is missing or unreadable: stored results are reused only when whole."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None


def write_text(path: str | Path, text: str) -> None:
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def command_line(argv: list[str] | None = None) -> list[str]:
    """The command that wrote a result, as the user can rerun it: ``ptlens run …`` whether it was started as the
    ``ptlens`` script or as ``python -m ptlens`` (whose argv[0] is the path of ``ptlens/__main__.py``); any other
    program (a script calling the library) as it was started."""
    import sys

    argv = list(sys.argv if argv is None else argv)
    if argv:
        p = Path(argv[0])
        if p.name == "ptlens" or (p.name == "__main__.py" and p.parent.name == "ptlens"):
            argv[0] = "ptlens"
    return argv


def versions() -> dict[str, str]:
    """Versions of ptlens and the libraries whose behaviour shapes its numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("ptlens", "torch", "numpy", "numba", "safetensors", "transformers",
                 "huggingface_hub", "math-verify", "trl", "vllm"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    import platform
    import sys

    out["python"] = sys.version.split()[0]
    out["platform"] = platform.platform()
    return out
