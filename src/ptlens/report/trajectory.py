"""Convergence curves of a stage with several checkpoints, from the stored transitions alone.

For a trajectory stage starting at checkpoint s with members m_1 … m_k (pure functions). The
curve ends at the stage's span s → m_k, the same whole-stage change every verdict uses
(report/stages.py); the scan stores that transition (kind "stage") for every stage of several
checkpoints, so the last point's distance is exact:

- **distance from the stage start** ‖W_m − W_s‖_F / ‖W_s‖_F: exact when the scan stored the
  transition s → m (always when s is the lineage's first checkpoint, as a cumulative
  transition), or for m = s + 2 from the two steps and the stored cosine between them
  (‖Δ₁ + Δ₂‖² = ‖Δ₁‖² + ‖Δ₂‖² + 2 cos·‖Δ₁‖‖Δ₂‖); otherwise not available;
- **path length from the stage start** Σ‖ΔW‖_F of the consecutive steps ÷ ‖W_s‖_F: always
  available, an upper bound of the distance (equal when all steps point the same way);
- per step: relative change and share of entries changed (bit-exact) of each interval;
- behaviour metrics of each checkpoint, when the behaviour run covered it.

The x axis is the optimizer step the checkpoints record (lab checkpoints) or that their names
carry (``@step_200``), else the count of
training items in the checkpoints' facts when it grows along the trajectory, else the
checkpoint's position in the stage.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ptlens.report.stages import ITEM_FIELDS, Stage, Transitions, step_of, stages_of
from ptlens.results.rows import Estimate, ModelStats
from ptlens.results.store import BehaviorResults, WeightSummary


@dataclass(frozen=True)
class TrajectoryPoint:
    name: str
    x: float
    distance: float | None
    distance_exact_from: str | None
    """The stored transition the distance comes from ("" when derived from a step cosine)."""
    path_length: float | None
    step_rel_change: float | None
    step_changed_exact: float | None
    behaviour: dict[str, Estimate] = field(default_factory=dict)
    """metric → its estimate for this checkpoint, when measured."""


@dataclass(frozen=True)
class Trajectory:
    stage: str
    start: str
    x_label: str
    points: list[TrajectoryPoint]


def _x_axis(stage: Stage) -> tuple[str, list[float]]:
    recorded = list(stage.steps)
    if recorded and all(isinstance(s, int) for s in recorded) and all(b > a for a, b in zip(recorded, recorded[1:])):
        return "optimizer step", [float(s) for s in recorded]
    steps = [step_of(n, r) for n, r in zip(stage.names, stage.revisions)]
    if all(s is not None and s[0] == "step" for s in steps):
        return "optimizer step", [float(s[1]) for s in steps]
    field_ = ITEM_FIELDS.get(stage.role or "")
    for key in ([field_] if field_ else []) + ["examples", "pairs", "prompts", "episodes"]:
        vals = [f.get(key) for f in stage.member_facts]
        if all(isinstance(v, (int, float)) for v in vals) and all(b > a for a, b in zip(vals, vals[1:])) and vals[0] > 0:
            return f"training {key} seen (stage facts)", [float(v) for v in vals]
    return "checkpoint in stage", [float(i + 1) for i in range(len(stage.members))]


def trajectories(summary: WeightSummary | dict | None, results: BehaviorResults | dict | None = None,
                 behaviour_metrics: tuple[str, ...] = ("accuracy", "token_entropy", "length_mean")) -> list[Trajectory]:
    """One :class:`Trajectory` per stage with several checkpoints (empty without weight results)."""
    summary, results = WeightSummary.coerce(summary), BehaviorResults.coerce(results)
    if not summary:
        return []
    tr = Transitions(summary)
    names = [c.get("name") for c in summary.checkpoints]
    models = results.models if results else {}
    out = []
    for st in stages_of(summary.lineage):
        if not st.is_trajectory or st.start is None:
            continue
        s = st.start
        x_label, xs = _x_axis(st)
        pts = [TrajectoryPoint(names[s], 0.0, 0.0, None, 0.0, None, None,
                               _behaviour(models.get(names[s]), behaviour_metrics))]
        for m, x in zip(st.members, xs):
            t = tr.name(m - 1, m)
            dist, how = tr.distance(s, m)
            pts.append(TrajectoryPoint(names[m], x, dist, tr.name(s, m) if how == "stored" else ("" if how else None),
                                       tr.path_length(s, m), tr.value("model", t, "rel_change"),
                                       tr.value("model", t, "changed_exact"),
                                       _behaviour(models.get(names[m]), behaviour_metrics)))
        out.append(Trajectory(st.label, names[s], x_label, pts))
    return out


def _behaviour(model: ModelStats | None, metrics: tuple[str, ...]) -> dict[str, Estimate]:
    if not model:
        return {}
    return {m: model.metrics[m] for m in metrics if model.value(m) is not None}
