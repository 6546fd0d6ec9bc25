"""One registry of the weight metrics: name, definition, unit, display format, null and error columns.

Everything that lists weight metrics reads it: the columns of ``weights/tensors.csv``
(:mod:`ptlens.weights.outputs`), the methods section of the report (:mod:`ptlens.report.methods`),
the console summary (``ptlens weights``), the tables of ``weight_analysis_report.md`` and of the
report's Learning-dynamics section. Adding a weight metric means computing it (kernel /
``ptlens.weights.metrics``) and adding one :class:`Metric` here; docs/METRICS.md must name it
(a test checks).

Pure data, no numpy or torch: the report and the CLI import it cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ELEMENTWISE, SPECTRAL, PAIR = "elementwise", "spectral", "pair"

# tables that show a metric (Metric.tables)
CONSOLE = "console"
"""``ptlens weights`` / ``ptlens run``: the one-screen summary per transition."""
REPORT = "report"
"""report.html / report.md, Learning dynamics: whole-model table."""
WEIGHT_MD = "weight_md"
"""weight_analysis_report.md: whole-model tables (values with their null beside them)."""


@dataclass(frozen=True)
class Metric:
    """One weight metric. ``name`` may hold ``{k}`` (the scan's rank k), e.g. ``top{k}_energy``."""

    name: str
    kind: str
    """ELEMENTWISE (a ratio of additive sums: exact for any set of tensors), SPECTRAL (2-D matrices; a set reports
    the parameter-weighted mean ``<name>_wmean``) or PAIR (two transitions of the same tensors)."""
    definition: str
    unit: str = ""
    label: str = ""
    """Table header; the name when empty."""
    pct: bool = False
    """Shown as a percentage (a share of entries)."""
    digits: int = 3
    null: bool = False
    """A ``<name>_null`` column: the value an unstructured update of the same size would give."""
    err: bool = False
    """A ``<name>_err`` column: the per-value error estimate of ``--spectral topk``."""
    tables: frozenset = field(default_factory=frozenset)
    methods: bool = True
    """Listed in the report's methods (False when another entry's definition covers it)."""
    methods_label: str = ""

    def column(self, k: int = 16) -> str:
        return self.name.format(k=k)

    def columns(self, k: int = 16) -> list[str]:
        """This metric's tensors.csv columns, in order: value, error estimate, null."""
        c = self.column(k)
        return [c, *([f"{c}_err"] if self.err else []), *([f"{c}_null"] if self.null else [])]

    def aggregate_key(self, k: int = 16) -> str:
        """Its key in summary.json aggregates: the name itself (element-wise) or ``<name>_wmean`` (spectral)."""
        return self.column(k) + ("_wmean" if self.kind == SPECTRAL else "")

    def null_key(self, k: int = 16) -> str | None:
        if not self.null:
            return None
        return self.aggregate_key(k) + "_null"

    def header(self, k: int = 16) -> str:
        return (self.label or self.name).format(k=k)


def _m(name, kind, definition, unit="", label="", tables=(), **kw) -> Metric:
    return Metric(name, kind, definition, unit, label, tables=frozenset(tables), **kw)


E, S = ELEMENTWISE, SPECTRAL
ALL = (CONSOLE, REPORT, WEIGHT_MD)

METRICS: tuple[Metric, ...] = (
    _m("norm_a", E, "‖W_A‖_F, the Frobenius norm of the weights before the transition.", "weight units"),
    _m("norm_b", E, "‖W_B‖_F, the Frobenius norm of the weights after the transition.", "weight units"),
    _m("delta_norm", E, "‖ΔW‖_F, the absolute size of the update.", "weight units"),
    _m("rel_change", E, "‖ΔW‖_F / ‖W_A‖_F; for a set of tensors √Σ‖ΔW‖² / √Σ‖W_A‖² (parameter-weighted, never a mean "
       "of ratios).", "ratio", "rel. change", ALL),
    _m("rms_change", E, "‖ΔW‖_F / √n, n = number of entries.", "weight units", "RMS change", (REPORT, WEIGHT_MD)),
    _m("changed_exact", E, "Share of entries whose stored values differ bit for bit (compared in the coarser of the two "
       "stored dtypes); for a set Σ changed / Σ entries. In bfloat16 updates below half a unit in the last place "
       "leave a weight unchanged, so small updates register on fewer (and smaller) weights.", "share of entries",
       "changed (exact)", ALL, pct=True, null=True),
    _m("changed_tol", E, "Share of entries with |ΔW| > tol (tolerance in the scan settings).", "share of entries",
       "changed (>tol)", ALL, pct=True, null=True),
    _m("update_sparsity", E, "1 − changed_exact.", "share of entries", "update sparsity", pct=True),
    _m("cosine_ab", E, "cos(W_A, W_B).", "cosine", "cos(W_A, W_B)", (WEIGHT_MD,), digits=7),
    _m("changed_magnitude_ratio", E, "Mean |W_A| over changed entries ÷ mean |W_A| over all entries.", "ratio",
       "changed-magnitude ratio", (WEIGHT_MD,), null=True),
    _m("entries", E, "Number of entries compared (rows present in only one checkpoint excluded).", "entries"),
    _m("nonfinite", E, "Entries that are NaN or Inf in A or B, left out of every metric.", "entries"),
    _m("sigma1", S, "σ₁(ΔW), the largest singular value of the update.", "weight units", "σ₁", err=True),
    _m("stable_rank", S, "‖ΔW‖_F² / σ₁(ΔW)² (2-D matrices; a set reports the parameter-weighted mean over its "
       "matrices).", "directions", "stable rank", ALL, err=True, null=True),
    _m("top1_energy", S, "Σ_{i≤k} σ_i(ΔW)² / ‖ΔW‖_F² for k = 1 and k of the scan settings.", "share of ‖ΔW‖²",
       "top-1 energy", err=True, methods_label="top-k energy"),
    _m("top{k}_energy", S, "Σ_{i≤k} σ_i(ΔW)² / ‖ΔW‖_F² for k of the scan settings.", "share of ‖ΔW‖²",
       "top-{k} energy", ALL, err=True, methods=False),
    _m("effective_rank", S, "exp(−Σ p_i log p_i), p_i = σ_i(ΔW) / Σσ(ΔW) (--spectral full only).", "directions",
       "effective rank"),
    _m("rank_fraction", S, "Numerical rank of ΔW ÷ min(m, n) (--spectral full only).", "share of full rank",
       "rank fraction", null=True),
    _m("subspace_angle_u_mean", S, "Principal angles between the top-k left (u) and right (v) singular subspaces of "
       "W_A and W_B, mean and max in degrees.", "degrees", "subspace angle (°)", (REPORT, WEIGHT_MD),
       methods_label="subspace angle"),
    _m("subspace_angle_u_max", S, "Largest principal angle between the top-k left singular subspaces of W_A and W_B.",
       "degrees", methods=False),
    _m("subspace_angle_v_mean", S, "Mean principal angle between the top-k right singular subspaces of W_A and W_B.",
       "degrees", methods=False),
    _m("subspace_angle_v_max", S, "Largest principal angle between the top-k right singular subspaces of W_A and W_B.",
       "degrees", methods=False),
    _m("spectral_drift", S, "Mean over i ≤ k of |σ_i(W_B) − σ_i(W_A)| / σ_i(W_A).", "ratio", "spectral drift"),
    _m("principal_overlap", S, "(|P ∩ C| / |C|) / α with P the α = 5% largest-magnitude entries of the rank-k "
       "reconstruction of W_A and C the changed entries: 1 = chance, < 1 the update avoids principal weights.",
       "ratio to chance", "principal overlap", ALL, null=True),
    _m("delta_cosine", PAIR, "cos(ΔW_T1, ΔW_T2) of two transitions over the same tensors: > 0 the later update "
       "continues the earlier one, < 0 partly undoes it, ≈ 0 unrelated directions.", "cosine", "cos(ΔW_T1, ΔW_T2)"),
)
BY_NAME: dict[str, Metric] = {m.name: m for m in METRICS}

# ---------------------------------------------------------------- tensors.csv: the other columns

ID_COLUMNS: dict[str, str] = {
    "tensor": "tensor name in the checkpoints",
    "transition": "transition name, A→B",
    "transition_kind": "consecutive, cumulative or span",
    "kind": "module kind (q_proj, mlp.down_proj, …)",
    "group": "module group (attention, mlp, embedding, head, norm, other)",
    "layer": "layer index; empty for tensors outside the layer stack",
    "shape": "shape of ΔW, dims joined by x",
    "dtype_a": "stored dtype in A",
    "dtype_b": "stored dtype in B",
    "rows_a": "rows of the tensor in A",
    "rows_b": "rows of the tensor in B",
    "added_rows": "rows present only in B (a resized vocabulary), excluded from ΔW",
}
SUM_COLUMNS: dict[str, str] = {
    "sum_a2": "Σ W_A², float64",
    "sum_b2": "Σ W_B², float64",
    "dot_ab": "Σ W_A·W_B, float64",
    "sum_d2": "Σ ΔW², float64",
    "n_changed_exact": "entries whose stored bits differ",
    "n_changed_tol": "entries with |ΔW| > tol",
    "sum_abs_a_changed": "Σ |W_A| over changed entries",
    "sum_abs_a": "Σ |W_A|",
    "n": "entries compared",
    "n_nonfinite": "NaN/Inf entries left out",
}
"""The raw sums of the kernel (``ptlens.weights.kernels``, same order): every element-wise metric is a ratio of them,
so any set of rows aggregates exactly by adding them."""
TAIL_COLUMNS: dict[str, str] = {"null_entries": "entries the element-wise null was simulated on"}


def fmt_number(v: float, digits: int = 3) -> str:
    """A measured number as every page prints it (report.html, report.md, weight_analysis_report.md, the console):
    ``digits`` significant digits, one more from 1 up (1234.5 reads 1235), e notation below 1e-3 and from 1e4."""
    if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e4):
        return f"{v:.{digits - 1}e}"
    return f"{v:.{digits}g}" if abs(v) < 1 else f"{v:.{digits + 1}g}"


def metrics(kind: str | None = None, table: str | None = None) -> list[Metric]:
    """Registered metrics in registry order, of one kind and/or shown in one table."""
    return [m for m in METRICS if (kind is None or m.kind == kind) and (table is None or table in m.tables)]


def metric_columns(kind: str, k: int = 16) -> list[str]:
    """The tensors.csv columns of one kind of metric, in order (no duplicates when k = 1)."""
    return list(dict.fromkeys(c for m in metrics(kind) for c in m.columns(k)))


def tensor_columns(k: int = 16) -> list[str]:
    """Every column of tensors.csv, in order."""
    return [*ID_COLUMNS, *metric_columns(ELEMENTWISE, k), *metric_columns(SPECTRAL, k), *SUM_COLUMNS, *TAIL_COLUMNS]


def describe_column(column: str, k: int = 16) -> str | None:
    """The definition of a tensors.csv column (metrics, their _err / _null, ids, sums); None when unregistered."""
    for d in (ID_COLUMNS, SUM_COLUMNS, TAIL_COLUMNS):
        if column in d:
            return d[column]
    for m in METRICS:
        c = m.column(k)
        if column == c:
            return m.definition
        if m.err and column == f"{c}_err":
            return f"error estimate of {c} (--spectral topk; 0 when exact)"
        if m.null and column == f"{c}_null":
            return f"{c} of an unstructured update of the same ‖ΔW‖_F stored in B's dtype (null baseline)"
    return None


def methods_definitions(kind: str) -> list[tuple[str, str]]:
    """(label, definition) pairs of one kind of metric for the report's methods section."""
    return [(m.methods_label or m.name, m.definition) for m in metrics(kind) if m.methods]


# ---------------------------------------------------------------- behaviour metrics (model_comparison_results.json)

B = "behaviour"

BEHAVIOUR_METRICS: tuple[Metric, ...] = (
    _m("accuracy", B, "Share of all samples that are correct (≈ pass@1).", "share of samples", "accuracy",
       (CONSOLE, REPORT)),
    _m("pass@{k}", B, "Chance that at least one of k samples is correct (unbiased estimator, Chen et al. 2021).",
       "share of problems", "pass@{k}", (CONSOLE, REPORT)),
    _m("maj@{k}", B, "Chance that the most frequent answer among k samples is correct (exact over k-subsets).",
       "share of problems", "maj@{k}", (CONSOLE, REPORT)),
    _m("distinct_answers", B, "Mean number of distinct (equivalence-clustered) final answers per problem.", "answers",
       "distinct answers", (CONSOLE, REPORT)),
    _m("distinct_4", B, "Unique word 4-grams ÷ all 4-grams within a problem's samples, mean over problems.", "share",
       "distinct-4", (REPORT,)),
    _m("answer_confidence", B, "Share of a problem's samples that agree with its modal answer.", "share",
       "confidence", (REPORT,)),
    _m("token_entropy", B, "Mean over response tokens of the full-vocabulary entropy at temperature 1.", "nats",
       "entropy (nats)", (CONSOLE, REPORT)),
    _m("length_mean", B, "Mean response length.", "tokens", "length (tokens)", (CONSOLE, REPORT)),
    _m("truncated", B, "Share of responses that hit the token limit.", "share of samples", "truncated", (REPORT,)),
    _m("ece", B, "Expected calibration error of answer confidence against the modal answer's correctness.", "share",
       "ECE", (CONSOLE, REPORT)),
    _m("brier", B, "Brier score of answer confidence against the modal answer's correctness.", "share", "Brier",
       (REPORT,)),
)
"""Per-model behaviour metrics (``models[name]["metrics"][key]`` with value and interval), in table order."""


def behaviour_metrics(table: str | None = None) -> list[Metric]:
    return [m for m in BEHAVIOUR_METRICS if table is None or table in m.tables]
