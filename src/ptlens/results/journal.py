"""An append-only JSONL journal that many processes may append to at once, and that survives a kill.

Used by the behaviour step (samples, scores) and the weight scan (finished tensors): each appends whole
lines as work finishes, and a rerun reads the complete lines back and does only the rest.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import Sequence

from ptlens.errors import PtlensError


class Journal:
    """An append-only JSONL file that any number of processes may append to at once.

    Every append is one ``write`` of whole lines on an ``O_APPEND`` descriptor, taken under an exclusive
    ``flock`` on ``PATH.lock`` (writes of regular files are not atomic for every size; the lock makes
    them so, and lets the recovery below run while nobody writes). Complete lines survive any kill;
    a torn last line (a writer killed inside ``write``) is cut off on open.
    """

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[dict] = []
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = os.open(str(path) + ".lock", os.O_RDWR | os.O_CREAT, 0o666)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        with self._locked():
            self._recover()

    def _locked(self):
        @contextlib.contextmanager
        def held():
            fcntl.flock(self._lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock, fcntl.LOCK_UN)
        return held()

    def _recover(self) -> None:
        data = self.path.read_bytes()
        good = 0
        lines = data.split(b"\n")
        for i, line in enumerate(lines):
            last = i == len(lines) - 1
            if last:
                break
            try:
                self.rows.append(json.loads(line))
            except ValueError:
                if i < len(lines) - 2:
                    raise PtlensError(f"{self.path}: line {i + 1} is corrupt (not written by ptlens?); "
                                      "rerun with --overwrite to start again") from None
                break
            good += len(line) + 1
        if good != len(data):
            os.truncate(self.path, good)

    def append(self, rows: Sequence[dict], sync: bool = True) -> None:
        """Write rows as one block (one ``write`` under the lock); with ``sync``, flushed to disk before returning.

        Without it the block is in the page cache, which survives a kill or an OOM of this process but not a
        crash of the machine; :meth:`sync` flushes later (an fsync costs ~3 ms here, a tiny tensor's scan less).
        """
        if not rows:
            return
        block = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        with self._locked():
            written = os.write(self._fd, block)
            if written != len(block):  # a short write (disk full): cut it off so the file stays whole lines
                os.truncate(self.path, os.fstat(self._fd).st_size - written)
                raise OSError(f"{self.path}: short write ({written} of {len(block)} bytes)")
            if sync:
                os.fsync(self._fd)
        self.rows.extend(rows)

    def sync(self) -> None:
        os.fsync(self._fd)

    def reset(self) -> None:
        """Empty the journal (a run starting over)."""
        with self._locked():
            os.truncate(self.path, 0)
        self.rows = []

    def close(self) -> None:
        os.close(self._fd)
        os.close(self._lock)


def remove_lock(path: str | Path) -> None:
    """Remove a journal's lock file (``PATH.lock``, empty: only its ``flock`` matters) when its run is over.

    Only once no writer can still be appending: a writer that opened the old lock file and one that creates a new
    one would not exclude each other. The behaviour step removes its locks after rewriting samples.jsonl (which
    no shard may still be writing either), the weight scan with its journal.
    """
    with contextlib.suppress(FileNotFoundError):
        os.unlink(str(path) + ".lock")
