"""The behaviour folder's files: their names, the scores journal's record, the kept nuclei, what is left to score.

The journals themselves (append-only, many writers) are :class:`ptlens.results.journal.Journal`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ptlens.behavior.nucleus import Nucleus
from ptlens.errors import PtlensError
from ptlens.io import atomic_open
from ptlens.results import files as F
from ptlens.results.journal import Journal

RESULTS_FILE = F.BEHAVIOR_RESULTS
SETTINGS, SAMPLES, SCORES = (Path(f).name for f in (F.BEHAVIOR_SETTINGS, F.SAMPLES_JSONL, F.SCORES_JSONL))
NUCLEI_DIR = Path(F.NUCLEI_DIR).name
MEMORY_PLAN = "memory_plan.json"


@dataclass
class ScoreRecord:
    """One line of ``scores.jsonl``: a response of ``model`` scored by ``scorer`` (itself or another)."""

    scorer: str
    model: str
    problem_id: str
    sample: int
    logprob_sum: float
    entropy_sum: float | None
    tokens: int
    kl_sum: float | None = None
    kl_inf_tokens: int | None = None
    unscorable: int = 0
    """Tokens the scorer cannot embed (ids beyond its vocabulary): then the response is left out (tokens 0)."""
    sampling_logprob_sum: float | None = None
    """Engine scoring only: Σ log q of the response under this scorer's sampling distribution
    (:class:`SampledScores`); the Monte-Carlo KL is the sampler's own minus the scorer's, at merge."""
    outside_tokens: int | None = None
    """Engine scoring only: positions whose token lies outside this scorer's nucleus (smoothed there)."""

    @property
    def key(self) -> tuple[str, str, str, int]:
        return (self.scorer, self.model, self.problem_id, self.sample)


def unscored(scorer: str, target: str, index: dict[str, int], samples: Journal, scores: Journal) -> list[dict]:
    """``target``'s sample rows that ``scorer`` has not scored yet, once each, in a fixed order (problem, sample;
    not the journal's, which depends on batches and workers): the same chunks every time."""
    have = {(r["problem_id"], r["sample"]) for r in scores.rows if r["scorer"] == scorer and r["model"] == target}
    todo, seen = [], set(have)
    for r in samples.rows:
        if r["model"] == target and (r["problem_id"], r["sample"]) not in seen:
            seen.add((r["problem_id"], r["sample"]))
            todo.append(r)
    return sorted(todo, key=lambda r: (index[r["problem_id"]], r["sample"]))


def pending_scores(scorer: str, targets: Sequence[str], samples: Journal, scores: Journal) -> bool:
    have = {(r["model"], r["problem_id"], r["sample"]) for r in scores.rows if r["scorer"] == scorer}
    return any(r["model"] in targets and (r["model"], r["problem_id"], r["sample"]) not in have for r in samples.rows)


def save_nuclei(folder: Path, model: str, start: int, keys: Sequence[tuple[str, int]],
                nuclei: Sequence[Nucleus | None]) -> None:
    """One scored chunk's nuclei (None: too wide to keep) as ``folder/<model>/<start>.npz``, written atomically."""
    import numpy as np

    have = [(k, n) for k, n in zip(keys, nuclei) if n is not None]
    if not have:
        return
    with atomic_open(folder / model / f"{start:09d}.npz", "wb") as f:
        np.savez(f, problem_ids=np.array([k[0] for k, _ in have]), samples=np.array([k[1] for k, _ in have]),
                 positions=np.array([n.positions for _, n in have], dtype=np.int64),
                 widths=np.concatenate([np.diff(n.offsets.cpu().numpy()) for _, n in have]).astype(np.int64),
                 ids=np.concatenate([n.ids.cpu().numpy() for _, n in have]).astype(np.int64),
                 logp=np.concatenate([n.logp.cpu().float().numpy() for _, n in have]))


def load_nuclei(folder: Path, model: str) -> dict[tuple[str, int], Nucleus]:
    """Every nucleus kept for ``model``'s responses, by (problem id, sample)."""
    import numpy as np
    import torch

    out: dict[tuple[str, int], Nucleus] = {}
    for f in sorted((folder / model).glob("[0-9]*.npz")):
        with np.load(f) as z:
            widths, ids, logp = z["widths"], z["ids"], z["logp"]
            w0 = e0 = 0
            for pid, sample, n in zip(z["problem_ids"].tolist(), z["samples"].tolist(), z["positions"].tolist()):
                w = widths[w0:w0 + n]
                offsets = np.zeros(n + 1, dtype=np.int64)
                np.cumsum(w, out=offsets[1:])
                e1 = e0 + int(offsets[-1])
                out[(pid, int(sample))] = Nucleus(torch.from_numpy(ids[e0:e1].copy()),
                                                  torch.from_numpy(logp[e0:e1].copy()), torch.from_numpy(offsets))
                w0, e0 = w0 + n, e1
    return out


def drop_nuclei(bdir: Path) -> None:
    import shutil

    shutil.rmtree(bdir / NUCLEI_DIR, ignore_errors=True)


def check_not_empty(name: str, samples: Journal) -> None:
    mine = [r for r in samples.rows if r["model"] == name]
    if mine and all(not r["response"].strip() for r in mine):
        raise PtlensError(f"model {name}: every one of its {len(mine)} responses is empty (it ends at once); "
                          "check its chat template and end-of-text token, or the --instruction")
