"""The per-tensor scan: one streaming pass over every tensor of every checkpoint of a lineage.

The scan is cut into data-only tasks, one per tensor name (``plan_scan``, :mod:`ptlens.weights.plan`);
``scan_tensor(task)`` is a pure function of its task, and ``merge_results`` (:mod:`ptlens.weights.records`)
puts the results back in plan order, so an executor (``executors.py``: in-process, Ray) may run the tasks
anywhere, in any order, and retry them, without changing a byte of the output.

For each tensor name, the same row chunk is read from all N checkpoints at once, and one fused
kernel call computes the element-wise sums of every consecutive and cumulative
transition from it: each byte of each checkpoint is read once, whatever the number of
transitions. Memory is bounded by the chunk budget, not by the model's size. Spectral
metrics then stream the same tensor's rows (from the page cache) through a randomized SVD.
"""

from __future__ import annotations

import contextlib
import functools
import math
import sys
import time
import zlib
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from ptlens.weights import kernels as K
from ptlens.weights import metrics as M
from ptlens.weights import null as N
from ptlens.weights.index import BITS, DTYPES, ITEMSIZE, CheckpointIndex, Reader, decode
from ptlens.weights.memory import _heap_temporaries
from ptlens.weights.names import parse_name
from ptlens.weights.plan import TensorTask, _TensorPlan, _torch
from ptlens.weights.records import PairRecord, TensorRecord, TensorResult

if TYPE_CHECKING:
    import torch

_coarser, _bits, _changed_mask = N.coarser, N.bits, N.changed_mask

@contextmanager
def _torch_threads_set(n: int):
    """Small linear algebra runs faster on one thread than on several contending ones."""
    if "torch" not in sys.modules:  # nothing of torch's runs in this block
        yield
        return
    torch = _torch()
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


_SMALL_MATRIX = 1 << 20


def scan_tensor(task: TensorTask, progress: Callable[[int, str], None] | None = None) -> TensorResult:
    """Every metric of one tensor over every transition: opens the files it needs, reads, closes them.

    A function of ``task`` alone (no state shared between tasks), so tasks may run in any order, in
    any process, and any number of times (a retried task gives the same result). ``progress(nbytes,
    name)`` is called after each chunk with the bytes it read.
    """
    t0 = time.perf_counter()
    with _TensorScan(task, progress) as s:
        records, pairs = s.run()
        return TensorResult(task.index, task.name, records, pairs, s.bytes_done, time.perf_counter() - t0)


class _TensorScan:
    """The working state of one task (its open files, its chunk size, a byte counter); lives inside ``scan_tensor``."""

    def __init__(self, task: TensorTask, progress: Callable[[int, str], None] | None):
        self.task = task
        self.cfg = task.config
        self.transitions = list(task.transitions)
        self.pairs = list(task.pairs)
        self.backend = task.backend
        self.progress = progress
        self.bytes_done = 0
        self.chunk_elems = max(1, self.cfg.chunk_mb * (1 << 20) // 4)
        self._spool = np.empty(0, dtype=np.float32)
        self.infos = task.infos
        self.readers = [None if i is None else Reader(CheckpointIndex(root=i.file.parent, tensors={task.name: i}))
                        for i in task.infos]

    @functools.cached_property
    def device(self) -> "torch.device":
        return _torch().device(self.task.device)

    def __enter__(self) -> "_TensorScan":
        return self

    def __exit__(self, *exc) -> None:
        for r in self.readers:
            if r is not None:
                r.close()

    def run(self) -> tuple[list[TensorRecord], list[PairRecord]]:
        t = self.task
        present = [i for i in t.infos if i is not None]
        role = parse_name(t.name)
        plan = _TensorPlan(t.name, role, [None if i is None else (i.shape[0] if i.shape else 1) for i in t.infos],
                           tuple(present[0].shape[1:]), [None if i is None else i.dtype for i in t.infos])
        return self._tensor(plan)

    # -- element-wise ---------------------------------------------------------------

    def _tensor(self, p: _TensorPlan) -> tuple[list[TensorRecord], list[PairRecord]]:
        N = len(self.infos)
        present = [c for c in range(N) if p.rows[c] is not None]
        active = [t for t, tr in enumerate(self.transitions) if tr.a in present and tr.b in present]
        sums = {t: np.zeros(K.T_FIELDS) for t in active}
        psums = {q: np.zeros(K.P_FIELDS) for q, (t1, t2) in enumerate(self.pairs) if t1 in active and t2 in active}
        added = {t: [0, 0.0] for t in active}
        bounds = sorted({p.rows[c] for c in present})
        r0 = 0
        for r1 in bounds:
            if r1 == r0:
                continue
            members = [c for c in present if p.rows[c] >= r1]
            local = {c: i for i, c in enumerate(members)}
            seg_t = [t for t in active if self.transitions[t].a in local and self.transitions[t].b in local]
            seg_p = [q for q in psums if self.pairs[q][0] in seg_t and self.pairs[q][1] in seg_t]
            newrows = [t for t in active if self.transitions[t].b in local and self.transitions[t].a not in local]
            step = max(1, self.chunk_elems // max(1, p.row_elems))
            for c0 in range(r0, r1, step):
                c1 = min(r1, c0 + step)
                raws = self._read_chunk(p.name, members, c0, c1)  # stored bytes, uint8
                if seg_t:
                    ts, ps = self._chunk_stats(raws, [p.dtypes[c] for c in members],
                                               [(local[self.transitions[t].a], local[self.transitions[t].b]) for t in seg_t],
                                               [(seg_t.index(self.pairs[q][0]), seg_t.index(self.pairs[q][1])) for q in seg_p])
                    for i, t in enumerate(seg_t):
                        sums[t] += ts[i]
                    for i, q in enumerate(seg_p):
                        psums[q] += ps[i]
                for t in newrows:
                    b = self.transitions[t].b
                    xb = decode(raws[local[b]], p.dtypes[b], np.float64)
                    added[t][0] += c1 - c0
                    added[t][1] += float(np.dot(xb, xb))
                self._advance(sum(r.nbytes for r in raws), p.name)
            r0 = r1
        records = []
        for t in active:
            tr = self.transitions[t]
            rec = TensorRecord(
                tensor=p.name, transition=tr.name, kind=p.role.kind, group=p.role.group, layer=p.role.layer,
                shape=self.infos[tr.b].shape,
                dtype_a=p.dtypes[tr.a], dtype_b=p.dtypes[tr.b], rows_a=p.rows[tr.a], rows_b=p.rows[tr.b],
                sums=sums[t], added_rows=added[t][0], added_rows_norm=math.sqrt(added[t][1]))
            rec.metrics = M.finalize(sums[t])
            records.append(rec)
        with _torch_threads_set(1):  # ops on ~1e5 entries: thread hand-offs would cost more than the work
            null_sample = self._nulls(p, present, active, records)
        prs = []
        for q, s in psums.items():
            t1, t2 = self.pairs[q]
            prs.append(PairRecord(p.name, p.role.kind, p.role.group, p.role.layer, self.transitions[t1].name,
                                  self.transitions[t2].name, s, M.delta_cosine(s)))
        if self.cfg.spectral != "off" and len(p.row_shape) == 1 and min(min(p.rows[c] for c in present), p.row_shape[0]) >= 2:
            small = self.device.type == "cpu" and max(p.rows[c] for c in present) * p.row_elems < _SMALL_MATRIX
            with _torch_threads_set(1 if small else _torch().get_num_threads()):
                self._spectral(p, present, active, records, null_sample)
        return records, prs

    def _rows_at(self, c: int, name: str, idx: np.ndarray, row_elems: int) -> np.ndarray:
        """Rows ``idx`` (sorted) of one checkpoint's tensor as float32 values, shape (len(idx), row_elems)."""
        dtype = self.infos[c].dtype
        row_bytes = row_elems * ITEMSIZE[dtype]
        if len(idx) and idx[-1] - idx[0] + 1 == len(idx):
            r0, r1 = int(idx[0]), int(idx[-1]) + 1
            raw = self.readers[c].read_bytes(name, r0, r1, np.empty((r1 - r0) * row_bytes, dtype=np.uint8))
        else:  # map the tensor and copy out the sampled rows: only their pages are touched
            raw = self.readers[c].map_rows(name, 0, int(idx[-1]) + 1).reshape(-1, row_bytes)[idx].reshape(-1)
        return decode(raw, dtype).reshape(len(idx), row_elems)

    def _nulls(self, p: _TensorPlan, present: list[int], active: list[int], records: list[TensorRecord]):
        """Element-wise nulls of every transition, simulated on one seeded row sample (``null``).

        Returns (sampled row indices, {transition: (changed mask, stored difference)}) for the
        spectral nulls. The sample is drawn from the rows every checkpoint holds.
        """
        seed = N.tensor_seed(p.name)
        idx = N.sample_rows(min(p.rows[c] for c in present), p.row_elems, seed)
        wa_rows: dict[int, np.ndarray] = {}
        z = None
        drawn = {}
        for t, rec in zip(active, records):
            tr = self.transitions[t]
            n = float(rec.sums[K.N])
            if rec.sums[K.NONFINITE] or n == 0:
                rec.metrics.update(N.elementwise(np.zeros(N.NS_FIELDS)))
                continue
            if tr.a not in wa_rows:
                wa_rows[tr.a] = self._rows_at(tr.a, p.name, idx, p.row_elems)
            wa = wa_rows[tr.a]
            if z is None:
                z = N.noise(tuple(wa.shape), seed)
            ns, ch, d = N.simulate(wa, p.dtypes[tr.a], p.dtypes[tr.b], math.sqrt(rec.sums[K.SUM_D2] / n), z,
                                   self.cfg.tolerance)
            rec.null_sums = ns * (n / ns[N.NS_N])
            rec.null_entries = int(ns[N.NS_N])
            rec.metrics.update(N.elementwise(ns))
            drawn[t] = (ch, d)
        return idx, drawn

    def _read_chunk(self, name: str, members: list[int], c0: int, c1: int) -> list[np.ndarray]:
        """The same rows of one tensor from each member checkpoint, as bytes mapped from the files."""
        return [self.readers[c].map_rows(name, c0, c1) for c in members]

    def _chunk_stats(self, raws: list[np.ndarray], dtypes: list[str], trans, pairs):
        """Sums of every transition over one chunk; ``raws``: the chunk's stored bytes (uint8) per checkpoint."""
        tol = self.cfg.tolerance
        if self.backend == "numba" and len(set(dtypes)) == 1 and dtypes[0] in ("BF16", "F32"):
            R = [r.view(BITS[ITEMSIZE[dtypes[0]]]) for r in raws]  # bit patterns: compared as stored
            return K.stats_numba(R, R, trans, trans, pairs, tol)
        torch = _torch()
        raws = [torch.from_numpy(r).view(DTYPES[d]) for r, d in zip(raws, dtypes)]
        n = raws[0].numel()
        X = torch.empty((len(raws), n), dtype=torch.float32, device=self.device)
        for i, r in enumerate(raws):
            X[i].copy_(r.to(self.device, non_blocking=True))
        cmp, extra = [], []
        for a, b in trans:
            if dtypes[a] == dtypes[b]:
                cmp.append((a, b))
                continue
            coarse = DTYPES[_coarser(dtypes[a], dtypes[b])]
            rows = []
            for c in (a, b):
                if dtypes[c] == _coarser(dtypes[a], dtypes[b]):
                    rows.append(c)
                else:
                    extra.append(X[c].to(coarse).float())
                    rows.append(len(raws) + len(extra) - 1)
            cmp.append(tuple(rows))
        XB = _bits(torch.cat([X, torch.stack(extra)]) if extra else X)
        if self.backend == "numba":
            return K.stats_numba(X.numpy(), XB.numpy().view(np.uint32), trans, cmp, pairs, tol)
        return K.stats_torch(X, XB, trans, cmp, pairs, tol)

    def _advance(self, nbytes: int, name: str) -> None:
        self.bytes_done += nbytes
        if self.progress:
            self.progress(nbytes, name)

    # -- spectral -------------------------------------------------------------------

    def _f32(self, c: int, name: str, c0: int, c1: int) -> "torch.Tensor":
        torch = _torch()
        x = self.readers[c].rows(name, c0, c1)
        if x.dtype == torch.bfloat16 and self.device.type == "cpu":
            return K.bf16_to_float32(x)
        return x.to(self.device, torch.float32)

    def _fused_blocks(self, name: str, present: list[int], deltas: list[tuple[int, int]], shared: int, cols: int,
                      step: int) -> Iterator[list["torch.Tensor"]]:
        """Row blocks of every W and ΔW in float32, widened in one pass into one reused buffer.

        Each block is valid until the next is requested: peak memory stays one block per matrix.
        """
        count = len(present) + len(deltas)
        if self._spool.size < count * step * cols:
            self._spool = np.empty(count * step * cols, dtype=np.float32)
        for c0 in range(0, shared, step):
            c1 = min(shared, c0 + step)
            n = (c1 - c0) * cols
            out = self._spool[: count * n].reshape(count, n)
            K.widen_with_deltas(self._read_chunk(name, present, c0, c1), deltas, out)
            yield [_torch().from_numpy(out[j]).view(c1 - c0, cols) for j in range(count)]

    def _spectral(self, p: _TensorPlan, present: list[int], active: list[int], records: list[TensorRecord],
                  null_sample) -> None:
        """Spectral metrics of every transition, each on the rows its own two checkpoints share.

        Transitions are grouped by that row count: a vocabulary resized after the first
        checkpoint (1000 → 1008 → 1008 rows) gives base→sft and base→dpo on 1000 rows and
        sft→dpo on all 1008. Each group's W's and ΔW's are decomposed together.
        """
        if any(r.metrics["nonfinite"] for r in records):
            for r in records:
                r.spectral = {"note": "skipped: NaN/Inf entries"}
            return
        groups: dict[int, list[tuple[int, TensorRecord]]] = {}
        for t, rec in zip(active, records):
            tr = self.transitions[t]
            groups.setdefault(min(p.rows[tr.a], p.rows[tr.b]), []).append((t, rec))
        for shared, items in sorted(groups.items()):
            self._spectral_rows(p, shared, [t for t, _ in items], [r for _, r in items], null_sample)

    def _spectral_rows(self, p: _TensorPlan, shared: int, active: list[int], records: list[TensorRecord],
                       null_sample) -> None:
        """Top-k (randomized block Krylov) or exact SVDs of the W's and ΔW's of transitions sharing ``shared`` rows.

        ``topk``: the matrices stay resident as float32 when they fit ``spectral_resident_mb``;
        larger ones are re-read from the files once per pass. ``full``: each matrix is
        materialised and decomposed exactly (``spectral.exact_svd``), one at a time.
        """
        from ptlens.weights import spectral as SP

        torch = _torch()
        cfg = self.cfg
        trans = [self.transitions[t] for t in active]
        present = sorted({c for tr in trans for c in (tr.a, tr.b)})
        cols = p.row_shape[0]
        seed = zlib.crc32(p.name.encode())
        full = cfg.spectral == "full"
        fits = (len(present) + 1) * shared * cols * 4 <= cfg.spectral_resident_mb * (1 << 20)
        resident = {c: self._f32(c, p.name, 0, shared) for c in present} if fits else {}
        step = shared if fits else max(1, self.chunk_elems // cols)
        frob2 = [float(r.sums[K.SUM_D2]) for r in records]
        spectral_deltas = [i for i in range(len(trans)) if frob2[i] != 0.0]

        def rows_of(c: int) -> Iterator["torch.Tensor"]:
            for c0 in range(0, shared, step):
                yield resident[c][c0:c0 + step] if fits else self._f32(c, p.name, c0, min(shared, c0 + step))

        if full:
            def whole(c: int) -> "torch.Tensor":
                return torch.cat(list(rows_of(c))).to(self.device)

            svd = {c: SP.exact_svd(whole(c), cfg.k) for c in present}
            delta = {i: SP.exact_svd(whole(trans[i].b) - whole(trans[i].a), 0, values_only=True)
                     for i in spectral_deltas}
        else:
            cached = {}
            if fits and (len(present) + len(spectral_deltas)) * shared * cols * 4 <= cfg.spectral_resident_mb * (1 << 20):
                cached = {i: resident[trans[i].b] - resident[trans[i].a] for i in spectral_deltas}
            fused = not fits and self.device.type == "cpu" and all(p.dtypes[c] == "BF16" for c in present)

            def blocks():
                if fused:
                    yield from self._fused_blocks(p.name, present, [(present.index(trans[i].a), present.index(trans[i].b))
                                                                    for i in spectral_deltas], shared, cols, step)
                    return
                for c0 in range(0, shared, step):
                    c1 = min(shared, c0 + step)
                    xs = {c: resident[c][c0:c1] if fits else self._f32(c, p.name, c0, c1) for c in present}
                    yield [xs[c] for c in present] + [cached[i][c0:c1] if i in cached else xs[trans[i].b] - xs[trans[i].a]
                                                      for i in spectral_deltas]

            lows = SP.randomized_svd_many(blocks, (shared, cols), len(present) + len(spectral_deltas), cfg.k,
                                         oversample=cfg.oversample, power_iters=cfg.power_iters, seed=seed,
                                         device=self.device)
            self._spool = np.empty(0, dtype=np.float32)  # give the blocks' memory back before the overlap passes
            svd = dict(zip(present, lows))
            delta = {i: lows[len(present) + j] for j, i in enumerate(spectral_deltas)}
        k = cfg.k
        _, drawn = null_sample
        for i, (t, rec, tr) in enumerate(zip(active, records, trans)):
            if frob2[i] == 0:
                spec = {"stable_rank": None, "top1_energy": None, f"top{k}_energy": None}
                if full:
                    spec.update(effective_rank=None, rank_fraction=0.0)
            else:
                d = delta[i]
                spec = SP.delta_spectrum(d.S, frob2[i], (shared, cols), full, ks=(1, k))
                spec.update(SP.spectrum_errors(d.S, d.err, frob2[i], ks=(1, k)))
            if t in drawn:
                ch, dnull = drawn[t]
                rn = N.rank_nulls(dnull, (shared, cols), seed)
                spec["stable_rank_null"] = rn["stable_rank_null"]
                if full:
                    spec["rank_fraction_null"] = rn["rank_fraction_null"]
            sa, sb = svd[tr.a], svd[tr.b]
            spec["subspace_angle_u_mean"], spec["subspace_angle_u_max"] = SP.principal_angles_deg(sa.U, sb.U)
            spec["subspace_angle_v_mean"], spec["subspace_angle_v_max"] = SP.principal_angles_deg(sa.V, sb.V)
            spec["spectral_drift"] = SP.spectral_drift(sa.S[:k], sb.S[:k])
            rec.spectral = spec
        with _heap_temporaries() if fits else contextlib.nullcontext():
            self._overlaps(p, shared, step, active, records, trans, svd, null_sample)

    def _overlaps(self, p, shared, step, active, records, trans, svd, null_sample) -> None:
        """principal_overlap of each transition out of each source checkpoint, and its null on the sampled rows."""
        from ptlens.weights import spectral as SP

        torch = _torch()
        idx, drawn = null_sample
        by_source: dict[int, list[int]] = {}
        for i, tr in enumerate(trans):
            by_source.setdefault(tr.a, []).append(i)
        sample = torch.as_tensor(idx[idx < shared], dtype=torch.long)
        for a, idxs in by_source.items():
            low = svd[a]
            k = low.U.shape[1]
            US = (low.U * low.S[:k].to(low.U.dtype)).float()
            V = low.V.float()
            ends = [trans[i].b for i in idxs]

            def recon(US=US, V=V):
                for c0 in range(0, shared, step):
                    yield US[c0:min(shared, c0 + step)] @ V.T

            def changed(a=a, ends=ends):
                for c0 in range(0, shared, step):
                    c1 = min(shared, c0 + step)
                    ra = self.readers[a].rows(p.name, c0, c1)
                    yield torch.stack([_changed_mask(ra, self.readers[b].rows(p.name, c0, c1), p.dtypes[a], p.dtypes[b])
                                       for b in ends]).to(self.device)

            results, threshold = SP.principal_overlap_threshold(recon, changed, shared * p.row_shape[0], self.cfg.alpha)
            rs = (US[sample.to(US.device)] @ V.T).cpu().numpy() if len(sample) else None
            for i, (ov, _, _) in zip(idxs, results):
                records[i].spectral["principal_overlap"] = ov
                t = active[i]
                if t in drawn and rs is not None:
                    ch = drawn[t][0][: len(sample)]
                    records[i].spectral["principal_overlap_null"] = N.principal_overlap_null(rs, threshold, ch)
