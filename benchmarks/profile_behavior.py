"""Where the behaviour step's wall time goes: samples per second and the share of each phase.

Runs ``ptlens behavior`` (defaults unless arguments follow ``--``) under py-spy, sampling the main
thread at ``--rate`` Hz including idle time, and sorts every sample into the phase its stack is in
(the first rule that matches, innermost phase first): generation, scoring (teacher-forced
log-probabilities, KL), grading, metrics, figures, model loading, writing results, start-up and
imports, interpreter start and exit, other. Prints a markdown table for docs/BENCHMARKS.md.

    python benchmarks/profile_behavior.py                 # the default run's behaviour step
    python benchmarks/profile_behavior.py -- --problems 12 --samples 4
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# (phase, substrings of a frame that put a sample in it), checked in this order on each stack
PHASES = [
    ("figures", ("behavior/figures.py", "matplotlib")),
    ("grading", ("behavior/grading.py", "math_verify")),
    ("scoring", ("score (ptlens/behavior/hf_model.py", "_shared_prompt_logits", "cross_kl", "nuclei")),
    ("generation", ("generate (ptlens/behavior/hf_model.py", "generate (ptlens/behavior/run.py")),
    ("model loading", ("from_pretrained", "load_model")),
    ("metrics", ("behavior/metrics.py",)),
    ("writing results", ("json/", "journal", "write_")),
    ("start-up and imports", ("<module>", "_find_and_load")),
]


def phase_of(stack: str) -> str:
    if not stack.strip():
        return "interpreter start and exit"  # no Python frame on the main thread
    for phase, keys in PHASES:
        if any(k in stack for k in keys):
            return phase
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=50, help="samples per second")
    ap.add_argument("rest", nargs="*", help="arguments for ptlens behavior (after --)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        raw, out = Path(d) / "profile.txt", Path(d) / "out"
        cmd = ["py-spy", "record", "-r", str(a.rate), "--idle", "--threads", "--format", "raw", "-o", str(raw), "--",
               sys.executable, "-m", "ptlens", "behavior", "--output-dir", str(out), *a.rest]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        by_thread: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for line in raw.read_text().splitlines():
            stack, _, n = line.rpartition(" ")
            thread, _, rest = stack.partition(";")
            by_thread[thread][phase_of(rest)] += int(n)
        main_thread = max(by_thread, key=lambda t: sum(by_thread[t].values()))  # the one sampled throughout
        counts = by_thread[main_thread]
        n_samples = sum(1 for line in (out / "behavior" / "samples.jsonl").read_text().splitlines() if line.strip())
    total = sum(counts.values())
    print(f"ptlens behavior {' '.join(a.rest)}: {wall:.1f} s wall under py-spy ({a.rate} Hz, main thread, idle included)"
          + (f", {n_samples} samples, {n_samples / wall:.1f} samples/s end to end" if n_samples else ""))
    print("\n| phase | share of wall time | seconds |\n|---|---:|---:|")
    for phase, n in counts.most_common():
        print(f"| {phase} | {100 * n / total:.1f}% | {wall * n / total:.1f} |")


if __name__ == "__main__":
    main()
