"""False-alarm rate and power of the reasoning-behaviour verdict, by simulation through the real pipeline.

    PYTHONPATH=src python3 benchmarks/calibrate_verdicts.py --null-reps 1000 --power-reps 200 > table.md

Each replicate draws two models' graded samples (ptlens.report.calibration.simulate_records), computes the behaviour
metrics and paired tests with compare_models, and takes the reasoning_behaviour verdict. Null rows: both models
from one distribution, a "clear difference" or "unexpected" is a false alarm. Power rows: the second model's
per-problem accuracy is raised by the effect; "found" = the accuracy check is clear. The design column is the
analytic power the report prints (ptlens.report.calibration.design).
"""

from __future__ import annotations

import argparse
import math
import time

from ptlens.report.calibration import binomial_upper, simulate

SIZES = [(12, 8), (30, 4), (60, 16), (30, 16), (100, 8), (200, 4)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--null-reps", type=int, default=1000)
    ap.add_argument("--power-reps", type=int, default=200)
    ap.add_argument("--effects", type=float, nargs="*", default=[0.10, 0.15])
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print("| problems × samples | null: false alarms | 99% upper bound | " +
          " | ".join(f"+{e:g}: found (design)" for e in a.effects) + " | seconds |")
    print("|---|---|---|" + "---|" * len(a.effects) + "---|")
    for p, n in SIZES:
        t = time.time()
        null = simulate(p, n, a.null_reps, 0.0, a.seed)
        k = round(null["false_alarm"] * a.null_reps)
        cells = []
        for e in a.effects:
            r = simulate(p, n, a.power_reps, e, a.seed)
            cells.append(f"{r['accuracy_found']:.0%} ({r['design_power']:.0%})")
        print(f"| {p} × {n} | {k}/{a.null_reps} = {k / a.null_reps:.1%} | {binomial_upper(k, a.null_reps):.1%} | "
              + " | ".join(cells) + f" | {math.ceil(time.time() - t)} |", flush=True)


if __name__ == "__main__":
    main()
