"""The mechanism driver: for each transition A → B, activation diffs and delta transplants, written to disk.

Per transition, each model is loaded once and never together with the other:

1. **B**: record its residual streams on the shared inputs (behaviour problems in B's prompt
   format, plus :data:`PLAIN_TEXTS`), its greedy answers to the problems, and its full
   next-token distributions along those answers.
2. **A**: run the same inputs and compare layer by layer (CKA, relative difference, logit-lens
   KL, ADL); answer the problems greedily and score B's answers; then, for each part of ΔW,
   copy B's tensors of that part into A, measure, and restore.

Files under ``OUTPUT/mechanism/``: ``layers.csv``, ``adl.json``, ``transplant.csv``,
``summary.json`` (settings, rows of both tables, timings) and the figures. A rerun with the
same checkpoint files and settings reuses them (``ptlens run`` does; :mod:`ptlens.results.reuse`); each
finished transition is also kept in ``transitions/*.json``, so an interrupted run resumes at the next transition.

Cost (forward passes only). On 2 CPU cores the embedded tiny lineage (3 transitions, 32
problems) takes about 20 s. **Estimate** for an 8B model on one H100/H200-class GPU in
bfloat16, per 100 problems and transition, from FLOPs and memory bandwidth (not measured):
the activation pass is 2 models × ~15k prompt tokens × 2·8e9 FLOP ≈ 0.5 PFLOP, plus the
logit lens at 33 layers × 2 × 2·128k·4096 FLOP per token ≈ 1 PFLOP, together a few seconds
at 40% of peak; greedy decoding is bandwidth-bound, ~16 GB of weights per step, ≈ 3.5 ms per
step at 4.8 TB/s, so ~2 s per 512-token batch at best and ~10–20 s with HF ``generate``
overheads, for each of A, B and the ~10 hybrids (4 groups + 5 layer parts): about 2–4 minutes
per transition, plus reading B's 16 GB once (a few seconds to a minute, by disk).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ptlens.behavior.hf_model import HFModel, check_weights
from ptlens.behavior.prompts import build_prompt, load_tokenizer, model_instruction, prompt_ids
from ptlens.behavior.sampling import SamplingSettings
from ptlens.behavior.grading import grade
from ptlens.behavior.problems import Problem, load_problems
from ptlens.errors import ArchitectureMismatch, PtlensError
from ptlens.io import command_line, read_json, write_json, write_text
from ptlens.mechanism.config import PLAIN_TEXTS, MechanismConfig  # noqa: F401  (MechanismConfig: read from here too)
from ptlens.results import files as F
from ptlens.results.mechanism import MECHANISM_SCHEMA as SCHEMA_VERSION
from ptlens.stats.bootstrap import resample_weights

DIR = F.MECHANISM_DIR

@dataclass
class MechanismResult:
    out_dir: Path
    summary: dict
    reused: bool = False
    files: dict[str, Path] = field(default_factory=dict)


# ---------------------------------------------------------------- checks


def check_pair(a, b, index_a, index_b) -> None:
    """A and B must have the same tensors with the same shapes (vocabulary rows may be added); else one line, exit 2."""
    from ptlens.weights.names import parse_name

    names_a, names_b = set(index_a.tensors), set(index_b.tensors)
    only = sorted(names_a ^ names_b)
    if only:
        raise ArchitectureMismatch(f"architecture mismatch between {a.name} and {b.name}: {len(only)} tensor(s) in one "
                                   f"only, e.g. {only[0]}")
    for n in sorted(names_a):
        sa, sb = index_a.tensors[n].shape, index_b.tensors[n].shape
        if sa != sb and not (parse_name(n).is_vocab and sa[1:] == sb[1:]):
            raise ArchitectureMismatch(f"architecture mismatch between {a.name} and {b.name}: {n} is "
                                       f"{list(sa)} vs {list(sb)}")


def pairs_for(lineage, which: str) -> list[tuple[int, int, str]]:
    from ptlens.weights.plan import transitions_for

    ts = transitions_for(lineage.names)
    return [(t.a, t.b, t.name) for t in ts if which == "all" or t.kind == "consecutive"]


def _fingerprint(lineage, config: MechanismConfig, problems: Sequence[Problem]) -> dict:
    """Settings, problems and every file of each checkpoint (:mod:`ptlens.results.reuse`), as stored."""
    from ptlens.results.reuse import fingerprint

    return fingerprint(lineage, {
        "schema": SCHEMA_VERSION, **config.fingerprint(),
        "problems_sha256": hashlib.sha256(json.dumps([[p.id, p.question, p.answer] for p in problems]).encode()).hexdigest(),
        "models": [{"name": c.name, "path": str(c.path), "resolved_revision": c.resolved_revision}
                   for c in lineage.checkpoints]}, part="model")


def stored_mechanism(lineage, config: MechanismConfig, output_dir: str | Path) -> dict | None:
    """The stored summary, if it was made from these checkpoint files with these settings and its files are all
    there; other settings: None (recomputed); checkpoint files changed since: one line, refused."""
    from ptlens.results.reuse import compare

    path = Path(output_dir) / F.MECHANISM_SUMMARY
    s = read_json(path)
    if s is None:
        return None
    problems = load_problems(config.problems, config.limit, config.seed)
    cmp = compare(s.get("fingerprint"), _fingerprint(lineage, config, problems))
    cmp.refuse_changed(path)
    if not cmp.same:
        return None
    if not all((Path(output_dir) / p).is_file() for p in (s.get("files") or {}).values()):
        return None
    return s


# ---------------------------------------------------------------- the run


def run_mechanism(lineage, config: MechanismConfig, output_dir: str | Path,
                  progress: Callable[[str], None] | None = None) -> MechanismResult:
    """Activation diffs and delta transplants for each transition of ``lineage``; files under ``OUTPUT/mechanism``."""
    config.validate()
    out = Path(output_dir)
    say = progress or (lambda _m: None)
    if not config.overwrite:
        s = stored_mechanism(lineage, config, out)
        if s is not None:
            return MechanismResult(out, s, reused=True, files={k: out / v for k, v in s["files"].items()})
    from ptlens.weights.index import CheckpointIndex

    problems = load_problems(config.problems, config.limit, config.seed)
    indexes = []
    for cp in lineage.checkpoints:
        if cp.path is None:
            raise PtlensError(f"model {cp.name}: not resolved to a local folder")
        check_weights(cp.path, cp.name, config.allow_pickle)
        indexes.append(CheckpointIndex.from_dir(cp.path, allow_pickle=config.allow_pickle))
    from ptlens.weights.index import align_tied_heads
    from ptlens.weights.names import architecture_note

    note = architecture_note(indexes[0].tensors)
    if note:
        raise PtlensError(f"mechanism: {lineage.checkpoints[0].name}: {note}")
    align_tied_heads(indexes)  # a tied checkpoint's head is its embedding when others store a head
    pairs = pairs_for(lineage, config.transitions)
    for i, j, _ in pairs:
        check_pair(lineage.checkpoints[i], lineage.checkpoints[j], indexes[i], indexes[j])
    t0, cpu0 = time.perf_counter(), time.process_time()
    layers_rows, adl, trows, notes, timings = [], [], [], [], {}
    fp = _fingerprint(lineage, config, problems)
    for i, j, name in pairs:
        ts = time.perf_counter()
        say(f"mechanism {name}")
        part_file = out / DIR / "transitions" / (re.sub(r"[^A-Za-z0-9_.-]+", "_", name.replace("→", "_to_")) + ".json")
        res = _stored_transition(part_file, fp) if not config.overwrite else None
        if res is None:  # finished transitions are kept, so an interrupted run resumes at the next one
            res = transition(lineage.checkpoints[i], lineage.checkpoints[j], indexes[i], indexes[j], name, problems,
                             config)
            write_json(part_file, {"fingerprint": fp, **res})
        layers_rows += res["layers"]
        adl.append(res["adl"])
        trows += res["transplant"]
        notes += res["notes"]
        timings[name] = round(time.perf_counter() - ts, 3)
    from ptlens.io import versions

    files = {"layers": F.MECHANISM_LAYERS_CSV, "adl": F.MECHANISM_ADL, "transplant": F.MECHANISM_TRANSPLANT_CSV,
             "summary": F.MECHANISM_SUMMARY}
    summary = {
        "schema": SCHEMA_VERSION, "kind": "ptlens.mechanism", "command": command_line(),
        "fingerprint": fp, "settings": config.fingerprint(),
        "lineage": lineage.to_dict(), "transitions": [n for _, _, n in pairs],
        "n_problems": len(problems), "plain_texts": list(PLAIN_TEXTS[:config.plain_prompts]),
        "layers": layers_rows, "transplant": trows, "notes": notes,
        "seconds": round(time.perf_counter() - t0, 3), "cpu_seconds": round(time.process_time() - cpu0, 3),
        "seconds_per_transition": timings, "versions": versions(),
    }
    write_text(out / files["layers"], _csv(layers_rows, LAYER_COLUMNS))
    write_json(out / files["adl"], {"k": config.adl_k, "readout": ADL_READOUT, "transitions": adl})
    write_text(out / files["transplant"], _csv(trows, TRANSPLANT_COLUMNS))
    if config.figures:
        from ptlens.mechanism.figures import write_figures

        for k, p in write_figures(summary, out / DIR).items():
            files[k] = str(p.relative_to(out))
    summary["files"] = files
    write_json(out / files["summary"], summary)
    return MechanismResult(out, summary, files={k: out / v for k, v in files.items()})


ADL_READOUT = ("mean of h_B − h_A over the first k positions of the plain-text prompts, per layer, read through B's "
               "final norm and unembedding; promoted = highest logits, suppressed = lowest")
LAYER_COLUMNS = ("transition", "a", "b", "layer", "cka", "act_rel_diff", "logit_lens_kl", "tokens")
_EST = ("accuracy", "acc_change", "acc_recovered", "kl_to_a", "kl_to_b", "kl_recovered")
TRANSPLANT_COLUMNS = ("transition", "a", "b", "row", "partition", "part", "tensors", "delta_share",
                      *[f"{k}{s}" for k in _EST for s in ("", "_lo", "_hi")], "acc_recovered_lo_fw",
                      "kl_recovered_lo_fw", "n_problems", "tokens")


def _stored_transition(path: Path, fingerprint: dict) -> dict | None:
    """A finished transition kept by an interrupted run, if made from these checkpoint files with these settings
    (checkpoint files changed since: refused in one line, as the summary)."""
    from ptlens.results.reuse import compare

    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    cmp = compare(d.get("fingerprint"), fingerprint)
    cmp.refuse_changed(path)
    return {k: d[k] for k in ("layers", "adl", "transplant", "notes")} if cmp.same else None


def _csv(rows: Sequence[dict], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else (f"{r[k]:.9g}" if isinstance(r.get(k), float) else r[k]))
                    for k in columns})
    return buf.getvalue()


def _flat(stats: dict) -> dict:
    out = {}
    for k in _EST:
        e = stats.get(k) or {}
        out[k], out[f"{k}_lo"], out[f"{k}_hi"] = e.get("value"), e.get("lo"), e.get("hi")
    for k in ("acc_recovered", "kl_recovered"):
        if f"{k}_fw" in stats:
            out[f"{k}_lo_fw"] = stats[f"{k}_fw"].get("lo")
    return out


# ---------------------------------------------------------------- one transition


def _greedy(model: HFModel, rows: Sequence[list[int]], stop, config: MechanismConfig, problems,
            max_new_tokens: int | None = None) -> tuple[list, np.ndarray]:
    settings = SamplingSettings(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens or config.max_new_tokens)
    gens = []
    for s in range(0, len(rows), config.batch_size):
        gens += model.generate(rows[s:s + config.batch_size], stop, settings, seed=config.seed)
    correct = np.array([_grade(g.text, p.answer) for g, p in zip(gens, problems)], dtype=bool)
    return gens, correct


_GRADES: dict[tuple[str, str], bool] = {}


def _grade(text: str, gold: str) -> bool:
    """Grades are pure functions of (response, gold); hybrids often repeat A's or B's answers word for word."""
    key = (text, gold)
    if key not in _GRADES:
        if len(_GRADES) > 100_000:
            _GRADES.clear()
        _GRADES[key] = grade(text, gold).correct
    return _GRADES[key]


def transition(cp_a, cp_b, index_a, index_b, name: str, problems: Sequence[Problem],
               config: MechanismConfig) -> dict:
    """Activation rows, ADL record and transplant rows of one transition A → B (both models loaded in turn)."""
    import torch

    from ptlens.mechanism.activations import adl_tokens, compare_pass, finite, make_batches, record_pass
    from ptlens.mechanism.transplant import response_logprobs, untie_head
    from ptlens.weights.names import parse_name

    notes = []
    tok = load_tokenizer(cp_b.path, cp_b.name)
    instruction = model_instruction(cp_b.path, config.instruction)
    prompts = [build_prompt(tok, p.question, instruction) for p in problems]
    pids = [prompt_ids(tok, pr) for pr in prompts]
    plain = [tok(t).input_ids for t in PLAIN_TEXTS[:config.plain_prompts]]
    embed = next((n for n in index_a.tensors if parse_name(n).group == "embedding" and parse_name(n).is_vocab), None)
    vocab = min(index_a.tensors[embed].shape[0], index_b.tensors[embed].shape[0]) if embed else None
    rows = pids + plain
    flags = [False] * len(pids) + [True] * len(plain)
    keep = [k for k, r in enumerate(rows) if r and (vocab is None or max(r) < vocab)]
    if len(keep) < len(rows):
        notes.append(f"{name}: {len(rows) - len(keep)} input(s) hold token ids outside {cp_a.name}'s vocabulary; left out")
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batches = make_batches([rows[k] for k in keep], [flags[k] for k in keep], pad, config.batch_tokens)
    stop = prompts[0].stop
    pidx = [k for k in range(len(pids)) if k in set(keep)]
    probs = [problems[k] for k in pidx]
    prows = [pids[k] for k in pidx]

    with HFModel(cp_b.path, tok, config.device, config.dtype, allow_pickle=config.allow_pickle) as mb:
        recorded = record_pass(mb.model, batches, vocab=vocab)
        if config.transplant:
            gens_b, correct_b = _greedy(mb, prows, stop, config, probs)
            resp = [[t for t in g.token_ids if vocab is None or t < vocab] for g in gens_b]
            pairs = [(p, r) for p, r in zip(prows, resp)]
            ref_b = response_logprobs(mb.model, pairs, pad, vocab)
    head_b = recorded.head
    with HFModel(cp_a.path, tok, config.device, config.dtype, allow_pickle=config.allow_pickle) as ma:
        if index_a.head_aliases and untie_head(ma.model):
            notes.append(f"{name}: {cp_a.name} ties its head to its embedding; its head is compared and transplanted "
                         "as a copy of the embedding")
        sums = compare_pass(ma.model, recorded, batches, config.adl_k, vocab)
        del recorded
        layer_rows = []
        adl_layers = []
        for L, s in enumerate(sums):
            r = s.row()
            layer_rows.append({"transition": name, "a": cp_a.name, "b": cp_b.name, "layer": L - 1,
                               "cka": finite(r["cka"]), "act_rel_diff": r["act_rel_diff"],
                               "logit_lens_kl": r["logit_lens_kl"], "tokens": r["tokens"]})
            if s.adl_count:
                mean = (s.adl_sum / s.adl_count).float()
                up, down = adl_tokens(mean, head_b, config.adl_top)
                adl_layers.append({"layer": L - 1, "norm": float(torch.linalg.vector_norm(mean)),
                                   "promoted": [_tok(tok, i, v) for i, v in up],
                                   "suppressed": [_tok(tok, i, v) for i, v in down]})
        adl = {"transition": name, "a": cp_a.name, "b": cp_b.name,
               "positions": sums[0].adl_count if sums else 0, "layers": adl_layers}
        trows: list[dict] = []
        if config.transplant:
            trows = _transplants(ma, cp_a, cp_b, index_b, name, probs, prows, stop, pairs, ref_b, correct_b,
                                 vocab, pad, config, notes)
    return {"layers": layer_rows, "adl": adl, "transplant": trows, "notes": notes}


def _tok(tok, i: int, v: float) -> dict:
    return {"id": i, "token": tok.convert_ids_to_tokens(i), "text": tok.decode([i]), "logit": round(v, 6)}


def _transplants(ma: HFModel, cp_a, cp_b, index_b, name, probs, prows, stop, pairs, ref_b, correct_b, vocab, pad,
                 config: MechanismConfig, notes: list) -> list[dict]:
    from ptlens.mechanism.transplant import (Measured, Swap, kl_sum, kl_sums, part_shares, part_statistics,
                                             plan_parts, response_logprobs, sum_of_parts)
    from ptlens.weights.index import Reader

    model = ma.model
    tokens = np.array([len(r) for _, r in pairs], dtype=float)
    cap = min(config.max_new_tokens, max(32, math.ceil(config.hybrid_length_factor * max(tokens, default=0))))
    _, correct_a = _greedy(ma, prows, stop, config, probs, cap)
    notes.append(f"{name}: {cp_a.name} and the hybrids answered in at most {cap} new tokens "
                 f"({config.hybrid_length_factor:g} × {cp_b.name}'s longest greedy answer)")
    ref_a = response_logprobs(model, pairs, pad, vocab)
    zero = np.zeros(len(pairs))
    m_a = Measured(correct_a, zero, kl_sums(ref_b, ref_a))
    m_b = Measured(correct_b, kl_sums(ref_a, ref_b), zero)
    swap = Swap(model)
    names = [n for n, t in index_b.tensors.items() if t.is_float and swap.param_name(n) is not None]
    missing = [n for n, t in index_b.tensors.items() if t.is_float and swap.param_name(n) is None]
    if missing:
        notes.append(f"{name}: {len(missing)} stored tensor(s) without a model parameter, not transplanted "
                     f"(e.g. {missing[0]})")
    n_layers = int(index_b.config.get("num_hidden_layers") or 0) or 1 + max(
        (r for r in (_layer(n) for n in names) if r is not None), default=-1)
    parts = plan_parts(names, n_layers, config.blocks)
    weights = resample_weights(len(pairs), config.n_boot, config.seed)
    sq: dict[str, float] = {}
    measured: dict[str, Measured] = {}
    with Reader(index_b) as rb:
        for part in parts:
            try:
                for n in part.tensors:  # one of B's tensors in memory at a time
                    t = rb.rows(n)
                    if n not in sq:
                        p = swap.view(n).detach()
                        rows = min(p.shape[0], t.shape[0]) if t.ndim else None
                        pa, tb = (p[:rows], t[:rows]) if rows is not None else (p, t)
                        sq[n] = float(((tb.double().to(pa.device) - pa.double()) ** 2).sum())
                    swap.apply({n: t})
                    del t
                _, correct = _greedy(ma, prows, stop, config, probs, cap)
                kls = response_logprobs(model, pairs, pad, vocab,
                                        reduce=lambda i, lp: (kl_sum(ref_a[i], lp), kl_sum(ref_b[i], lp)))
            finally:
                swap.restore()
            measured[part.name] = Measured(correct, np.array([k[0] for k in kls]), np.array([k[1] for k in kls]))
    shares = part_shares(parts, sq)
    base = {"transition": name, "a": cp_a.name, "b": cp_b.name, "n_problems": len(pairs), "tokens": int(tokens.sum())}
    rows = []
    for label, m in ((cp_a.name, m_a), (cp_b.name, m_b)):
        rows.append({**base, "row": "model", "partition": "", "part": label, "tensors": 0 if m is m_a else len(names),
                     "delta_share": 0.0 if m is m_a else 1.0, **_flat(part_statistics(m, m_a, m_b, tokens, weights))})
    for part in parts:  # every part of both partitions is one claim of the transition's answer: Bonferroni over all
        rows.append({**base, "row": "part", "partition": part.partition, "part": part.name, "tensors": len(part.tensors),
                     "delta_share": shares[part.name] if math.isfinite(shares[part.name]) else None,
                     **_flat(part_statistics(measured[part.name], m_a, m_b, tokens, weights, family=len(parts)))})
    for partition in ("groups", "layers"):
        ms = [measured[p.name] for p in parts if p.partition == partition]
        st = sum_of_parts(ms, m_a, m_b, weights)
        acc_a = float(m_a.correct.mean())
        rows.append({**base, "row": "sum", "partition": partition, "part": f"sum of {partition}",
                     "tensors": sum(len(p.tensors) for p in parts if p.partition == partition),
                     "delta_share": sum(shares[p.name] for p in parts if p.partition == partition),
                     **_flat({**st, "accuracy": {"value": acc_a + (st["acc_change"]["value"] or 0.0)}})})
    return rows


def _layer(n: str) -> int | None:
    from ptlens.weights.names import parse_name

    return parse_name(n).layer
