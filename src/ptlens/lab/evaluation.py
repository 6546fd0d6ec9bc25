"""How the lab scores each stage it stores: the evaluation set, the bits a stage changed, and paired differences.

Apart from :mod:`ptlens.lab.runner` (which trains and saves) because these are what ``lineage.json`` quotes and
what scripts and tests recompute on the stored checkpoints; each is a plain function of its inputs.
"""

from __future__ import annotations

from pathlib import Path

from ptlens.behavior.problems import HELD_OUT, IN_DISTRIBUTION
from ptlens.lab.config import LabConfig
from ptlens.lab.data import SEED_EVAL, problems

EVAL_TEMPERATURE, EVAL_TOP_P = 0.6, 0.95
"""``ptlens run``'s default sampling, so that the lab's sampled accuracy is the one ``ptlens run`` would measure."""
SAMPLED = f"t{EVAL_TEMPERATURE:g}"


def in_distribution(acc: dict) -> dict:
    return {k: v.get(IN_DISTRIBUTION) for k, v in acc.items()}


def eval_problems(config: LabConfig) -> list:
    """The lab's evaluation set: ``eval_problems`` of the training levels, then ``held_out_problems`` of the
    held-out levels, tagged ``in-distribution`` / ``held-out`` (and by level)."""
    held = problems(config.held_out_problems, SEED_EVAL, config.seed, config.held_out_levels, kind=HELD_OUT) \
        if config.held_out_levels and config.held_out_problems else []
    return problems(config.eval_problems, SEED_EVAL, config.seed, config.levels) + held


def stored_changed_share(a: Path, b: Path) -> float:
    """Share of stored entries whose bits differ between two checkpoints (ptlens's ``changed_exact``, model-wide)."""
    from safetensors.torch import load_file

    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    changed = sum(int((wa[k].view(-1) != wb[k].view(-1)).sum()) for k in wa)
    return round(changed / sum(t.numel() for t in wa.values()), 6)


def stage_comparisons(eval_set: list, per_problem: dict[str, dict[str, list[int]]], samples: int, seed: int,
                      pairs: list[tuple[str, str]], n_boot: int = 1000) -> list[dict]:
    """Paired differences B − A of greedy and sampled accuracy on the lab's eval set, per in-distribution / held-out.

    Intervals: 95% percentile bootstrap over problems, the same resamples for both stages
    (ptlens's behaviour estimators), as ``ptlens run`` reports its paired differences.
    """
    import numpy as np

    from ptlens.stats.bootstrap import paired_difference, resample_weights
    from ptlens.stats.statistic import Statistic

    out = []
    for a, b in pairs:
        if a not in per_problem or b not in per_problem:
            continue
        entry: dict = {"pair": f"{b} - {a}"}
        for kind in (IN_DISTRIBUTION, HELD_OUT):
            idx = [i for i, p in enumerate(eval_set) if kind in p.tags]
            if not idx:
                continue
            weights = resample_weights(len(idx), n_boot, seed)
            entry[kind] = {"problems": len(idx)}
            for decoding, k in (("greedy", 1), (SAMPLED, samples)):
                sa, sb = (Statistic(np.array([per_problem[m][("greedy" if k == 1 and decoding == "greedy" else "sampled")][i]
                                              for i in idx], dtype=float), np.full(len(idx), float(k)))
                          for m in (a, b))
                entry[kind][decoding] = {key: (round(v, 4) if isinstance(v, float) else v)
                                         for key, v in paired_difference(sb, sa, weights).to_dict().items()}
        out.append(entry)
    return out
