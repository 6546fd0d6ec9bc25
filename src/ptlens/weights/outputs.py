"""Scan results on disk: tensors.csv, summary.json, figures and weight_analysis_report.md.

File names, columns and record types come from :mod:`ptlens.results`. Every file is written
atomically; :func:`ptlens.results.store.load_weight_summary` reads back what ``ptlens report``
needs to rebuild pages without rescanning.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from ptlens.io import command_line, versions, write_text
from ptlens.results import files as F
from ptlens.results import registry as REG
from ptlens.results.store import WEIGHTS_SCHEMA, TensorRow, WeightSummary, fmt_cell, read_csv
from ptlens.weights import kernels as K
from ptlens.weights.aggregate import all_aggregates
from ptlens.weights.records import ScanResult

# the column lists come from the metric registry (ptlens.results.registry); kept here under their old names
ELEMENTWISE = REG.metric_columns(REG.ELEMENTWISE)
SPECTRAL = REG.metric_columns(REG.SPECTRAL)
SUM_FIELDS = list(REG.SUM_COLUMNS)
assert len(SUM_FIELDS) == K.T_FIELDS, "registry.SUM_COLUMNS must name every kernel sum, in order"


def tensor_rows(result: ScanResult) -> list[TensorRow]:
    """The scan's records as typed rows of tensors.csv."""
    kinds = {t.name: t.kind for t in result.transitions}
    return [TensorRow(tensor=r.tensor, transition=r.transition, transition_kind=kinds[r.transition], kind=r.kind,
                      group=r.group, layer=r.layer, shape=tuple(r.shape), dtype_a=r.dtype_a, dtype_b=r.dtype_b,
                      rows_a=r.rows_a, rows_b=r.rows_b, added_rows=r.added_rows,
                      metrics={**r.metrics, **r.spectral},
                      sums=dict(zip(SUM_FIELDS, (float(x) for x in r.sums))), null_entries=r.null_entries)
            for r in result.records]


def write_tensors_csv(result: ScanResult, path: Path) -> None:
    from ptlens.results.store import write_tensor_rows

    write_tensor_rows(path, tensor_rows(result), REG.tensor_columns(result.config.k))


_fmt = fmt_cell


def summary_dict(result: ScanResult) -> dict:
    recs = result.records
    return {
        "schema": WEIGHTS_SCHEMA,
        "ptlens": "weights",
        "versions": versions(),
        "command": command_line(),
        "lineage": result.lineage.to_dict(),
        "settings": {**asdict(result.config), "device_used": result.device, "backend_used": result.backend},
        **({"fingerprint": result.fingerprint} if result.fingerprint else {}),  # what reuse compares (results.reuse)
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


def write_outputs(result: ScanResult, out_dir: str | Path, figures: bool = True, pool=None) -> dict:
    """All weight outputs under ``out_dir``; returns the summary written to summary.json.

    ``pool``: a :class:`ptlens.figpool.FigurePool` whose workers draw the figures (started before the scan).
    """
    from ptlens.weights.report_md import weight_report_markdown

    from ptlens.results.store import save_weight_summary

    out = Path(out_dir)
    write_tensors_csv(result, out / F.TENSORS_CSV)
    summary = summary_dict(result)
    figs = draw_figures(summary, out, pool) if figures else {}
    summary["figures"] = {k: str(Path(v).relative_to(out)) for k, v in figs.items()}
    save_weight_summary(out, WeightSummary.from_dict(summary))
    write_text(out / F.WEIGHT_REPORT_MD, weight_report_markdown(summary))
    return summary


def draw_figures(summary: dict, out: Path, pool=None) -> dict[str, Path]:
    """The weight figures; with a :class:`ptlens.figpool.FigurePool`, drawn by its workers in parallel, so this
    process never imports matplotlib."""
    if pool is None:
        from ptlens.weights.figures import weight_figures

        return weight_figures(summary, out)
    import json
    import tempfile

    names = ["overview", *F.WEIGHT_FIGURES]  # the four-panel overview is the slowest: first out
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", dir=out, prefix=".figures-", delete=False) as f:
        json.dump(summary, f)
    try:
        paths = dict(zip(names, pool.map([("ptlens.weights.figures:draw", [n, f.name, str(out)]) for n in names])))
    finally:
        Path(f.name).unlink(missing_ok=True)
    return {n: Path(paths[n]) for n in [*F.WEIGHT_FIGURES, "overview"] if paths[n] is not None}


def read_tensors_csv(path: str | Path) -> list[dict]:
    return read_csv(path)
