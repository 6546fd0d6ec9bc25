"""Are two output folders of ``ptlens run`` the same, apart from what differs between any two runs?

Used to show that a refactor moved code without changing behaviour (docs/LIBRARY.md, "Refactoring"):
run the default job before and after, then ``python scripts/compare_runs.py BEFORE AFTER``. Every file
must be present in both and byte-identical, except these fields, which change from one run to the
next of the same code and are masked before comparing:

- wall and CPU times, throughputs, and the "created" timestamps;
- free memory at the start of the run (``behavior/memory_plan.json``, device ``bytes``);
- the SHA-256 of a results file the report quotes, since the file itself holds the times above;
- the path of ``ptlens/__main__.py`` in the recorded command line, when run as ``python -m ptlens`` from two
  checkouts (run both from a folder named alike, so that ``--output-dir`` is the same), and the checkout's path
  in the bundled tiny models' paths;
- those model files' mtime and inode in the checkpoint fingerprints (``files``: size, mtime_ns, inode, header
  SHA-256), which differ between two copies of the same files.

Exit status 0 when the folders match, 1 (with the differing files and their first differing lines) when not.
"""

from __future__ import annotations

import difflib
import json
import re
import sys
from pathlib import Path

TIME_KEYS = {"seconds", "cpu_seconds", "throughput_gb_per_s", "created", "wall_seconds"}
TEXT_MASKS = [
    (re.compile(rb"sha256 (`|<span class=\"mono\">)[0-9a-f]{64}"), rb"sha256 \1<sha256>"),
    (re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}"), b"<time>"),
    (re.compile(rb"(?<=[\s\"`>])[^\s\"`>]*/ptlens/__main__\.py"), b"ptlens"),
    (re.compile(rb"(?<=[\s\"`>(])/[^\s\"`<>]*/src/ptlens/"), b"<checkout>/src/ptlens/"),
    (re.compile(rb"read in [0-9.]+ s \([0-9.e+-]+ GB/s\)"), b"read in <t> s (<r> GB/s)"),
]


def _mask_json(obj, path: str = ""):
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k == "files" and isinstance(v, dict) and all(isinstance(x, list) and len(x) == 4 for x in v.values()):
                out[k] = {n: [x[0], "<mtime>", "<inode>", x[3]] for n, x in v.items()}
            elif k in TIME_KEYS or k.endswith("_seconds") or k == "seconds_per_transition" \
                    or (path.endswith("devices[]") and k == "bytes"):
                out[k] = "<masked>"
            else:
                out[k] = _mask_json(v, f"{path}.{k}")
        return out
    if isinstance(obj, list):
        return [_mask_json(v, f"{path}[]") for v in obj]
    return obj


def normalised(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            data = json.dumps(_mask_json(json.loads(data)), indent=1, sort_keys=True).encode()
        except ValueError:
            pass
    if path.suffix in {".json", ".md", ".html", ".csv", ".txt", ".jsonl"}:
        for pattern, repl in TEXT_MASKS:
            data = pattern.sub(repl, data)
    return data


def compare(a: Path, b: Path) -> list[str]:
    """Differences between the two folders, one entry per file (empty when they match)."""
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    problems = [f"only in {a}: {p}" for p in sorted(files_a - files_b)]
    problems += [f"only in {b}: {p}" for p in sorted(files_b - files_a)]
    for rel in sorted(files_a & files_b):
        x, y = normalised(a / rel), normalised(b / rel)
        if x == y:
            continue
        try:
            diff = difflib.unified_diff(x.decode().splitlines(), y.decode().splitlines(), lineterm="", n=0)
            head = "\n".join(list(diff)[2:8])
        except UnicodeDecodeError:
            head = f"binary: {len(x)} vs {len(y)} bytes"
        problems.append(f"differs: {rel}\n{head}")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python scripts/compare_runs.py BEFORE_DIR AFTER_DIR", file=sys.stderr)
        return 2
    a, b = (Path(p) for p in argv)
    problems = compare(a, b)
    n = sum(1 for p in a.rglob("*") if p.is_file())
    for p in problems:
        print(p)
    print(f"{n} files compared: " + ("identical (times masked)" if not problems else f"{len(problems)} differ"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
