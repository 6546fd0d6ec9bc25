"""Scan results on disk: tensors.csv, summary.json, figures and weight_analysis_report.md.

Every file is written atomically; ``load_summary`` reads back what ``ptlens report`` needs to
rebuild pages without rescanning.
"""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

from ptlens.io import atomic_open, versions, write_json, write_text
from ptlens.weights import kernels as K
from ptlens.weights.aggregate import all_aggregates
from ptlens.weights.scan import ScanResult

ELEMENTWISE = ["norm_a", "norm_b", "delta_norm", "rel_change", "rms_change", "changed_exact", "changed_exact_null",
               "changed_tol", "changed_tol_null", "update_sparsity", "cosine_ab", "changed_magnitude_ratio",
               "changed_magnitude_ratio_null", "entries", "nonfinite"]
SPECTRAL = ["sigma1", "sigma1_err", "stable_rank", "stable_rank_err", "stable_rank_null", "top1_energy",
            "top1_energy_err", "top16_energy", "top16_energy_err", "effective_rank", "rank_fraction",
            "rank_fraction_null", "subspace_angle_u_mean", "subspace_angle_u_max", "subspace_angle_v_mean",
            "subspace_angle_v_max", "spectral_drift", "principal_overlap", "principal_overlap_null"]
SUM_FIELDS = ["sum_a2", "sum_b2", "dot_ab", "sum_d2", "n_changed_exact", "n_changed_tol", "sum_abs_a_changed",
              "sum_abs_a", "n", "n_nonfinite"]


def _spectral_cols(result: ScanResult) -> list[str]:
    k = result.config.k
    cols = [c.replace("top16", f"top{k}") for c in SPECTRAL]
    return list(dict.fromkeys(cols))


def write_tensors_csv(result: ScanResult, path: Path) -> None:
    spec_cols = _spectral_cols(result)
    kinds = {t.name: t.kind for t in result.transitions}
    header = ["tensor", "transition", "transition_kind", "kind", "group", "layer", "shape", "dtype_a", "dtype_b",
              "rows_a", "rows_b", "added_rows", *ELEMENTWISE, *spec_cols, *SUM_FIELDS, "null_entries"]
    with atomic_open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in result.records:
            w.writerow([r.tensor, r.transition, kinds[r.transition], r.kind, r.group,
                        "" if r.layer is None else r.layer, "x".join(map(str, r.shape)), r.dtype_a, r.dtype_b,
                        r.rows_a, r.rows_b, r.added_rows,
                        *[_fmt(r.metrics.get(c)) for c in ELEMENTWISE],
                        *[_fmt(r.spectral.get(c)) for c in spec_cols],
                        *[_fmt(float(x)) for x in r.sums], r.null_entries])


def _fmt(v) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return str(v)


def summary_dict(result: ScanResult) -> dict:
    recs = result.records
    return {
        "ptlens": "weights",
        "versions": versions(),
        "command": sys.argv,
        "lineage": result.lineage.to_dict(),
        "settings": {**asdict(result.config), "device_used": result.device, "backend_used": result.backend},
        "transitions": [asdict(t) for t in result.transitions],
        "aggregates": all_aggregates(recs, result.pairs),
        "added_rows": [
            {"tensor": r.tensor, "transition": r.transition, "rows_a": r.rows_a, "rows_b": r.rows_b,
             "added_rows": r.added_rows, "added_rows_norm": r.added_rows_norm}
            for r in recs if r.rows_a != r.rows_b
        ],
        "tied_embeddings": result.tied,
        "missing_tensors": result.missing,
        "skipped_tensors": result.skipped,
        "nonfinite": [
            {"tensor": r.tensor, "transition": r.transition, "entries": int(r.sums[K.NONFINITE])}
            for r in recs if r.sums[K.NONFINITE]
        ],
        "tensors_scanned": len({r.tensor for r in recs}),
        "bytes_read": result.bytes_read,
        "seconds": result.seconds,
        "throughput_gb_per_s": result.bytes_read / result.seconds / 1e9 if result.seconds > 0 else None,
    }


def write_outputs(result: ScanResult, out_dir: str | Path, figures: bool = True) -> dict:
    """All weight outputs under ``out_dir``; returns the summary written to summary.json."""
    from ptlens.weights.report_md import weight_report_markdown

    out = Path(out_dir)
    wdir = out / "weights"
    write_tensors_csv(result, wdir / "tensors.csv")
    summary = summary_dict(result)
    figs = {}
    if figures:
        from ptlens.weights.figures import weight_figures

        figs = weight_figures(summary, out)
    summary["figures"] = {k: str(Path(v).relative_to(out)) for k, v in figs.items()}
    write_json(wdir / "summary.json", summary)
    write_text(out / "weight_analysis_report.md", weight_report_markdown(summary))
    return summary


def load_summary(out_dir: str | Path) -> dict:
    from ptlens.errors import PtlensError

    f = Path(out_dir) / "weights" / "summary.json"
    if not f.is_file():
        raise PtlensError(f"{f}: no weight results here (run `ptlens weights` first)")
    try:
        return json.loads(f.read_text())
    except ValueError as e:
        raise PtlensError(f"{f}: unreadable ({e})") from None


def read_tensors_csv(path: str | Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(io.StringIO(f.read())))
