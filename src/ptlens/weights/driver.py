"""The scan's driver: plan the tasks (:mod:`ptlens.weights.plan`), run them on an executor
(:mod:`ptlens.weights.executors`), journal each finished tensor so a stopped scan resumes, merge in plan order.

Apart from ``tensor_scan`` so that the executors, which run ``scan_tensor``, and the driver, which picks an executor,
do not import each other.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import numpy as np

from ptlens.errors import PtlensError
from ptlens.resolve import Lineage
from ptlens.weights.config import ScanConfig
from ptlens.weights.plan import ScanPlan, plan_scan, resolve_device
from ptlens.weights.records import PairRecord, ScanResult, TensorRecord, TensorResult, merge_results

Progress = Callable[[int, int, str], None]


def scan_lineage(lineage: Lineage, config: ScanConfig | None = None, progress: Progress | None = None,
                 executor: str | object = "local", journal: str | os.PathLike | None = None, overwrite: bool = False,
                 note: Callable[[str], None] | None = None) -> ScanResult:
    """Scan every tensor of every checkpoint once (see the module docstring): plan tasks from the headers,
    run them on ``executor`` (a name in ``executors.EXECUTORS`` or an executor object), merge in plan order.

    ``journal``: a JSONL file (:class:`ptlens.results.journal.Journal`) where each finished tensor is appended as
    its result reaches this process, whichever executor ran it; a rerun with the same checkpoint files and
    settings scans only the tensors not in it, and merges to the same bytes. A journal of other settings or
    another lineage is started over; one of checkpoint files that changed since is refused unless ``overwrite``
    (which always starts over). ``note`` hears one line about what was reused or discarded.
    """
    from ptlens.weights.executors import get_executor

    config = config or ScanConfig()
    t0 = time.perf_counter()
    plan = plan_scan(lineage, config)
    fp = scan_fingerprint(lineage, config, plan.device, plan.backend)
    jr, done = (None, {}) if journal is None else open_scan_journal(Path(journal), plan, fp, overwrite, note)
    todo = [t for t in plan.tasks if t.index not in done]
    ex = get_executor(executor) if isinstance(executor, str) else executor
    try:
        steps = _bytes_progress(progress, sum(t.nbytes for t in todo))
        results = ex.map(todo, steps) if jr is None else ex.map(todo, steps, on_result=_journal_writer(jr))
    finally:
        if jr is not None:
            jr.sync()
            jr.close()
    # a resumed scan's time: this run's and what the reused tensors took when they were scanned
    seconds = time.perf_counter() - t0 + sum(r.seconds for r in done.values())
    result = merge_results(plan, lineage, [*done.values(), *results], seconds)
    result.fingerprint, result.reused = fp, len(done)
    return result


def scan_fingerprint(lineage: Lineage, config: ScanConfig, device: str | None = None,
                     backend: str | None = None) -> dict:
    """What a scan's results are made from: the checkpoints' weight files and the settings that change the numbers."""
    from ptlens.results.reuse import fingerprint

    if device is None or backend is None:
        device, backend = resolve_device(config)
    return fingerprint(lineage, config.fingerprint(device, backend), part="weights")


# ---------------------------------------------------------------- the scan journal

JOURNAL_SCHEMA = 1


def open_scan_journal(path: Path, plan: ScanPlan, fp: dict, overwrite: bool,
                      note: Callable[[str], None] | None = None):
    """The journal at ``path``, its first line the scan's fingerprint, and the results of the plan's tensors it
    holds (by task index). A journal made otherwise is emptied first; see :func:`scan_lineage`."""
    from ptlens.results.journal import Journal
    from ptlens.results.reuse import compare

    say = note or (lambda _m: None)
    if overwrite:
        path.unlink(missing_ok=True)  # even one that is not a journal ptlens wrote
    jr = Journal(path)
    try:
        if jr.rows:
            head = jr.rows[0]
            cmp = compare(head.get("fingerprint") if isinstance(head, dict) else None, fp)
            cmp.refuse_changed(path)
            if not cmp.same:
                if len(jr.rows) > 1:
                    say(f"weights: {len(jr.rows) - 1} tensor(s) in {path} were scanned with other settings "
                        f"({cmp.what()}): scanning again")
                jr.reset()
        if not jr.rows:
            jr.append([{"schema": JOURNAL_SCHEMA, "fingerprint": fp}])
        done: dict[int, TensorResult] = {}
        for row in jr.rows[1:]:
            i = row.get("index") if isinstance(row, dict) else None
            if isinstance(i, int) and 0 <= i < len(plan.tasks) and plan.tasks[i].name == row.get("tensor"):
                done.setdefault(i, result_from_row(row))
    except BaseException:
        jr.close()
        raise
    if done:
        say(f"weights: resumed: {len(done)} of {len(plan.tasks)} tensors reused from {path}")
    return jr, done


def _journal_writer(jr, every: float = 1.0) -> Callable[[TensorResult], None]:
    """Append each result as it arrives, flushed to disk at most once per ``every`` seconds: an fsync costs ~3 ms
    here, which per tensor would add ~0.4 s to a 1B pair's 3 s element-wise scan (146 tensors); a kill or OOM of
    this process loses no line either way (the page cache keeps them), a crash of the machine at most the last
    second's, which are scanned again."""
    last = time.monotonic()

    def write(r: TensorResult) -> None:
        nonlocal last
        now = time.monotonic()
        jr.append([result_row(r)], sync=now - last >= every)
        if now - last >= every:
            last = now

    return write


def result_row(r: TensorResult) -> dict:
    """One journal line: a tensor's result with every number as stored (floats round-trip exactly through JSON;
    arrays and numpy scalars keep their dtypes), so a resumed scan merges to the same bytes. No pickle: an output
    folder handed over by someone else must not run code."""
    return {"index": r.index, "tensor": r.name, "bytes_read": r.bytes_read, "seconds": r.seconds,
            "records": [{k: _enc(v) for k, v in vars(x).items()} for x in r.records],
            "pairs": [{k: _enc(v) for k, v in vars(x).items()} for x in r.pairs]}


def result_from_row(row: dict) -> TensorResult:
    try:
        return TensorResult(row["index"], row["tensor"],
                            [TensorRecord(**{k: _dec(v) for k, v in d.items()}) for d in row["records"]],
                            [PairRecord(**{k: _dec(v) for k, v in d.items()}) for d in row["pairs"]],
                            row["bytes_read"], row["seconds"])
    except (KeyError, TypeError, ValueError) as e:
        raise PtlensError(f"scan journal: the line of tensor {row.get('tensor')!r} is not one ptlens wrote ({e}); "
                          "rerun with --overwrite to start again") from None


def _enc(x):
    if isinstance(x, np.ndarray):
        return {"$nd": x.dtype.str, "shape": list(x.shape), "v": x.ravel().tolist()}
    if isinstance(x, np.generic):
        return {"$np": x.dtype.str, "v": x.item()}
    if isinstance(x, tuple):
        return {"$t": [_enc(v) for v in x]}
    if isinstance(x, dict):
        return {"$d": {k: _enc(v) for k, v in x.items()}}
    if isinstance(x, list):
        return [_enc(v) for v in x]
    return x


def _dec(x):
    if isinstance(x, list):
        return [_dec(v) for v in x]
    if not isinstance(x, dict):
        return x
    if "$nd" in x:
        return np.array(x["v"], dtype=np.dtype(x["$nd"])).reshape(x["shape"])
    if "$np" in x:
        return np.dtype(x["$np"]).type(x["v"])
    if "$t" in x:
        return tuple(_dec(v) for v in x["$t"])
    return {k: _dec(v) for k, v in x["$d"].items()}


def _bytes_progress(progress: Progress | None, total: int) -> Callable[[int, str], None] | None:
    """Adapt the CLI's (done, total, item) progress to the executors' (nbytes just read, item) calls."""
    if progress is None:
        return None
    done = 0

    def step(nbytes: int, name: str) -> None:
        nonlocal done
        done += nbytes
        progress(done, total, name)

    return step
