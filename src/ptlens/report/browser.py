"""The side-by-side sample browser: per problem, each model's answers with correctness and length.

Pure selection of what to show; the page escapes every string (model text is data).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

from ptlens.results.store import BehaviorResults

MAX_CHARS = 4000


@dataclass(frozen=True)
class ShownSample:
    sample: int
    text: str
    correct: bool
    tokens: int | None
    truncated: bool
    extracted: str | None
    clipped: int = 0
    """Characters left out of ``text`` for display (0: shown whole)."""


@dataclass(frozen=True)
class BrowserModel:
    name: str
    correct: int
    n: int
    samples: list[ShownSample]


@dataclass(frozen=True)
class BrowserProblem:
    id: str
    question: str
    gold: str
    models: list[BrowserModel] = field(default_factory=list)


@dataclass(frozen=True)
class Browser:
    problems: list[BrowserProblem]
    total_problems: int
    models: list[str]
    per_model: int


def _shown(r: dict) -> ShownSample:
    text = str(r.get("response") or "")
    clipped = max(0, len(text) - MAX_CHARS)
    return ShownSample(int(r.get("sample") or 0), text[:MAX_CHARS], bool(r.get("correct")),
                       r.get("tokens") if isinstance(r.get("tokens"), int) else None, bool(r.get("truncated")),
                       None if r.get("extracted") is None else str(r.get("extracted")), clipped)


def pick(rows: Sequence[dict], per_model: int) -> list[dict]:
    """The first sample, then the first of the other correctness (so a reader sees a right and a wrong answer),
    then the next ones in sample order; at most ``per_model``."""
    rows = sorted(rows, key=lambda r: r.get("sample") or 0)
    if not rows or per_model < 1:
        return []
    out = [rows[0]]
    other = next((r for r in rows[1:] if bool(r.get("correct")) != bool(rows[0].get("correct"))), None)
    if other is not None and len(out) < per_model:
        out.append(other)
    for r in rows[1:]:
        if len(out) >= per_model:
            break
        if r not in out:
            out.append(r)
    return sorted(out, key=lambda r: r.get("sample") or 0)


def build_browser(results: BehaviorResults | None, rows: Sequence[dict] | None, max_problems: int = 40,
                  per_model: int = 2) -> Browser | None:
    """Problems in the behaviour run's order (the first ``max_problems``), models in lineage order."""
    if not rows:
        return None
    models: list[str] = results.names if results else []
    for r in rows:
        if r.get("model") not in models:
            models.append(r.get("model"))
    problems = {p.get("id"): p for p in (results.problems if results else None) or []}
    order = list(problems)
    for r in rows:
        if r.get("problem_id") not in problems and r.get("problem_id") not in order:
            order.append(r.get("problem_id"))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("problem_id"), r.get("model")), []).append(r)
    out = []
    for pid in order[:max_problems]:
        p = problems.get(pid) or {}
        first = next((groups[(pid, m)][0] for m in models if (pid, m) in groups), {})
        question = p.get("question") or first.get("prompt") or ""
        bm = []
        for m in models:
            rs = groups.get((pid, m), [])
            if rs:
                bm.append(BrowserModel(m, sum(bool(r.get("correct")) for r in rs), len(rs),
                                       [_shown(r) for r in pick(rs, per_model)]))
        out.append(BrowserProblem(str(pid), str(question), str(p.get("answer") or first.get("gold") or ""), bm))
    return Browser(out, len(order), models, per_model)
