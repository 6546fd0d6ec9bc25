"""The report's own figures: sample efficiency, convergence along a trajectory, accumulation across stages.

Drawn from stored results only (matplotlib, Agg, PNG), Okabe–Ito colours, every axis labelled
with its quantity and unit. PNG output carries no timestamp, so a rebuild writes the same bytes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ptlens.figpool import NothingToDraw, figure
from ptlens.plotting import OKABE_ITO, save_png
from ptlens.plotting import pyplot as _plt
from ptlens.report.trajectory import Trajectory
from ptlens.results.store import BehaviorResults, WeightSummary
from ptlens.report.verdicts import EfficiencyRow

ROLE_COLOURS = {"base": "#000000", "sft": "#0072B2", "dpo": "#009E73", "rlvr": "#D55E00"}


def _colour(role: str | None, i: int) -> str:
    return ROLE_COLOURS.get(role or "", OKABE_ITO[(i + 4) % len(OKABE_ITO)])


def _scale(ax, values: Sequence[float]) -> None:
    """Log scale only when the bars span more than 20×; otherwise linear from 0 so bar heights compare."""
    pos = [v for v in values if v and v > 0]
    if pos and max(pos) / min(pos) > 20:
        ax.set_yscale("log")
        ax.set_ylabel(ax.get_ylabel() + " (log scale)")
    else:
        ax.set_ylim(0, max(pos or [1.0]) * 1.1)


@figure
def efficiency_figure(rows: Sequence[EfficiencyRow], path: Path) -> Path | None:
    """Relative weight change per training item, one bar per stage with known item counts (log scale)."""
    rows = [r for r in rows if r.per_item]
    if not rows:
        raise NothingToDraw("no stage with known training item counts (its preset or lab facts give none)")
    plt = _plt()
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10.5, 3.9), layout="constrained")
    xs = range(len(rows))
    cols = [_colour(r.role, i) for i, r in enumerate(rows)]
    a1.bar(xs, [r.rel_change for r in rows], color=cols)
    a1.set_xticks(list(xs), [r.stage for r in rows])
    a1.set_ylabel("relative change ‖ΔW‖_F / ‖W_start‖_F")
    a1.set_title("Change over the whole stage", fontsize=10)
    _scale(a1, [r.rel_change for r in rows])
    a2.bar(xs, [r.per_item for r in rows], color=cols)
    a2.set_xticks(list(xs), [f"{r.stage}\n({r.items:,} {r.item_field})" for r in rows], fontsize=8)
    a2.set_ylabel("relative change per training item")
    a2.set_title("Change per distinct training item (different data per stage)", fontsize=10)
    _scale(a2, [r.per_item for r in rows])
    for ax in (a1, a2):
        ax.grid(alpha=0.3, axis="y")
        ax.set_xlabel("stage")
    fig.suptitle("Sample efficiency: weight change per training item")
    return save_png(fig, path)


@figure
def convergence_figure(trajs: Sequence[Trajectory], path: Path, level: str = "95%") -> Path | None:
    """Per trajectory stage: distance and path length from the stage start, per-step change, behaviour."""
    if not trajs:
        raise NothingToDraw("no intermediate checkpoints (a trajectory lineage such as tiny-trajectory has them)")
    plt = _plt()
    from matplotlib.ticker import MaxNLocator
    has_beh = any(p.behaviour for t in trajs for p in t.points)
    cols = 3 if has_beh else 2
    fig, axes = plt.subplots(len(trajs), cols, figsize=(4.4 * cols, 3.6 * len(trajs)), squeeze=False,
                             layout="constrained")
    for row, t in zip(axes, trajs):
        xs = [p.x for p in t.points]
        ax = row[0]
        ax.plot(xs, [p.path_length for p in t.points], "--", marker="o", ms=3, color=OKABE_ITO[1],
                label="path length Σ‖ΔW‖ (upper bound)")
        ex = [(p.x, p.distance) for p in t.points if p.distance is not None]
        if ex:
            ax.plot(*zip(*ex), "-", marker="s", ms=4, color=OKABE_ITO[0], label="distance ‖W − W_start‖ (exact)")
        ax.set_xlabel(t.x_label)
        ax.set_ylabel(f"change from {t.start} (÷ ‖W_{t.start}‖_F)", fontsize=8)
        ax.set_title(f"{t.stage}: change from stage start", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        ax = row[1]
        steps = [(p.x, p.step_rel_change, p.step_changed_exact) for p in t.points[1:]]
        ax.plot([s[0] for s in steps], [s[1] for s in steps], "-o", ms=3, color=OKABE_ITO[0], label="relative change")
        ax.set_ylabel("relative change of the step", fontsize=8)
        ax.set_ylim(0, max([s[1] for s in steps if s[1] is not None] or [1.0]) * 1.15)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3), useOffset=False)
        ax.set_xlabel(t.x_label)
        ax2 = ax.twinx()
        ax2.plot([s[0] for s in steps], [s[2] for s in steps], "--^", ms=3, color=OKABE_ITO[3],
                 label="entries changed (share)")
        ax2.set_ylabel("share of entries changed (bit-exact)", fontsize=8)
        ax2.set_ylim(0, 1.02)
        h1, l1 = ax.get_legend_handles_labels()
        h2, l2 = ax2.get_legend_handles_labels()
        ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="center right")
        ax.set_title(f"{t.stage}: each step (previous checkpoint → this)", fontsize=10)
        ax.grid(alpha=0.3)
        if has_beh:
            ax = row[2]
            pts = [(p.x, p.behaviour["accuracy"]) for p in t.points if "accuracy" in p.behaviour]
            if pts:
                ys = [e.value for _, e in pts]
                ax.plot([x for x, _ in pts], ys, "-o", ms=3, color=OKABE_ITO[2], label=f"accuracy ({level} interval)")
                lo = [e.lo if e.lo is not None else e.value for _, e in pts]
                hi = [e.hi if e.hi is not None else e.value for _, e in pts]
                ax.fill_between([x for x, _ in pts], lo, hi, color=OKABE_ITO[2], alpha=0.2, lw=0)
                ax.legend(fontsize=7)
            ax.set_ylim(-0.02, 1.02)
            ax.set_xlabel(t.x_label)
            ax.set_ylabel("accuracy (share of samples correct)", fontsize=8)
            ax.set_title(f"{t.stage}: behaviour", fontsize=10)
            ax.grid(alpha=0.3)
    for ax in axes.flat:
        if all(t.x_label == "checkpoint in stage" for t in trajs):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle("Convergence along training trajectories")
    return save_png(fig, path)


@figure
def transfer_figure(summary: WeightSummary, results: BehaviorResults | None, path: Path, threshold: float = 0.1,
                    level: str = "95%") -> Path | None:
    """How change accumulates: distance from the first checkpoint and Σ of steps; cosines between stage updates;
    accuracy along the lineage when measured."""
    from ptlens.report.stages import Transitions

    tr = Transitions(summary)
    cps = summary.checkpoints
    if len(cps) < 2:
        raise NothingToDraw("fewer than two checkpoints")
    plt = _plt()
    models = results.models if results else {}
    names = [c.get("name") for c in cps]
    has_beh = sum(1 for n in names if n in models) >= 2
    fig, axes = plt.subplots(1, 3 if has_beh else 2, figsize=(14 if has_beh else 10, 4.0), layout="constrained")
    ax = axes[0]
    xs = list(range(len(cps)))
    cum = [0.0] + [tr.value("model", tr.name(0, j), "rel_change") for j in range(1, len(cps))]
    base = tr.value("model", tr.name(0, 1), "norm_a")
    walked, acc = [0.0], 0.0
    for j in range(1, len(cps)):
        d = tr.value("model", tr.name(j - 1, j), "delta_norm")
        acc = acc + d if d is not None and acc is not None else None
        walked.append(acc / base if acc is not None and base else None)
    ax.plot(xs, walked, "--o", ms=3, color=OKABE_ITO[1], label="Σ of consecutive steps (path length)")
    ax.plot([x for x, v in zip(xs, cum) if v is not None], [v for v in cum if v is not None], "-s", ms=4,
            color=OKABE_ITO[0], label=f"distance from {names[0]} (exact)")
    ax.set_xticks(xs, names, rotation=30 if len(xs) > 5 else 0, ha="right" if len(xs) > 5 else "center", fontsize=8)
    ax.set_xlabel("checkpoint")
    ax.set_ylabel(f"relative change from {names[0]} (÷ ‖W_{names[0]}‖_F)", fontsize=8)
    ax.set_title("How change accumulates", fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    ax = axes[1]
    pairs = [p for p in summary.cosines("delta_cosine_model") if p.delta_cosine is not None]
    if pairs:
        vals = [p.delta_cosine for p in pairs]
        # pairs in greys, as in the weights' composite figure: no transition colour means two things
        ax.bar(range(len(pairs)), vals, color=["#444444" if v >= 0 else "#AAAAAA" for v in vals],
               hatch=None, edgecolor="#222222", linewidth=0.5)
        ax.set_xticks(range(len(pairs)), [f"{p.t1}\nvs {p.t2}" for p in pairs], fontsize=7)
        for y in (threshold, -threshold):
            ax.axhline(y, color="#666666", lw=0.8, ls=":")
        ax.axhline(0, color="#333333", lw=0.8)
        lim = max(0.25, max(abs(v) for v in vals) * 1.15)
        ax.set_ylim(-lim, lim)
    ax.set_xlabel("pair of transitions")
    ax.set_ylabel("cos(ΔW₁, ΔW₂) over all tensors")
    ax.set_title(f"Reinforce (> {threshold:g}) or undo (< −{threshold:g})?", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    if has_beh:
        ax = axes[2]
        pts = [(i, models[n].metrics.get("accuracy")) for i, n in enumerate(names) if n in models]
        pts = [(i, e) for i, e in pts if e and e.value is not None]
        if pts:
            ys = [e.value for _, e in pts]
            err = [[max(0.0, e.value - (e.lo if e.lo is not None else e.value)) for _, e in pts],
                   [max(0.0, (e.hi if e.hi is not None else e.value) - e.value) for _, e in pts]]
            ax.errorbar([i for i, _ in pts], ys, yerr=err, fmt="-o", ms=4, capsize=3, color=OKABE_ITO[2],
                        label=f"accuracy, {level} interval")
            ax.legend(fontsize=7)
        ax.set_xticks(xs, names, rotation=30 if len(xs) > 5 else 0, ha="right" if len(xs) > 5 else "center", fontsize=8)
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("checkpoint")
        ax.set_ylabel("accuracy (share of samples correct)")
        ax.set_title("Behaviour along the lineage", fontsize=10)
        ax.grid(alpha=0.3)
    fig.suptitle("Transfer: how the stages' changes add up")
    return save_png(fig, path)
