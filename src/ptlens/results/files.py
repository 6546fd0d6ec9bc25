"""Every file ptlens writes under ``--output-dir``, named once.

Paths are relative to the output folder (POSIX separators, as stored in summary files). The
writers (weights, behaviour, mechanism, report) and the readers (report, pipeline reuse) use
these names; docs/OUTPUTS.md describes each.
"""

from __future__ import annotations

# ---------------------------------------------------------------- weights
WEIGHTS_DIR = "weights"
TENSORS_CSV = f"{WEIGHTS_DIR}/tensors.csv"
WEIGHT_SUMMARY = f"{WEIGHTS_DIR}/summary.json"
WEIGHT_JOURNAL = f"{WEIGHTS_DIR}/scan.jsonl"
"""Transient: each finished tensor's result, so a killed scan resumes (removed once the outputs are written)."""
WEIGHT_REPORT_MD = "weight_analysis_report.md"
OVERVIEW_FIGURE = "sft_vs_rlvr_comparison.png"
"""The seed's name for the overview figure; a lineage without sft and rlvr stages gets OVERVIEW_FIGURE_OTHER."""
OVERVIEW_FIGURE_OTHER = "weight_changes_overview.png"
WEIGHT_FIGURES = {
    "heatmap_rel_change": f"{WEIGHTS_DIR}/heatmap_rel_change.png",
    "heatmap_changed_exact": f"{WEIGHTS_DIR}/heatmap_changed_exact.png",
    "layers_rel_change": f"{WEIGHTS_DIR}/layers_rel_change.png",
    "layers_changed_exact": f"{WEIGHTS_DIR}/layers_changed_exact.png",
    "spectral": f"{WEIGHTS_DIR}/spectral.png",
}

# ---------------------------------------------------------------- behaviour
BEHAVIOR_DIR = "behavior"
BEHAVIOR_RESULTS = "model_comparison_results.json"
SAMPLES_JSONL = f"{BEHAVIOR_DIR}/samples.jsonl"
NUCLEI_DIR = f"{BEHAVIOR_DIR}/nuclei"
"""Transient: each model's sampling nuclei kept while scoring (removed when every score is on disk)."""
SCORES_JSONL = f"{BEHAVIOR_DIR}/scores.jsonl"
BEHAVIOR_SETTINGS = f"{BEHAVIOR_DIR}/settings.json"
BEHAVIOR_FIGURES = {
    "pass_at_k": f"{BEHAVIOR_DIR}/pass_at_k.png",
    "accuracy_histogram": f"{BEHAVIOR_DIR}/accuracy_histogram.png",
    "entropy_length": f"{BEHAVIOR_DIR}/entropy_length.png",
    "calibration": f"{BEHAVIOR_DIR}/calibration.png",
    "cross_ppl_heatmap": f"{BEHAVIOR_DIR}/cross_ppl_heatmap.png",
}

# ---------------------------------------------------------------- mechanism
MECHANISM_DIR = "mechanism"
MECHANISM_SUMMARY = f"{MECHANISM_DIR}/summary.json"
MECHANISM_LAYERS_CSV = f"{MECHANISM_DIR}/layers.csv"
MECHANISM_ADL = f"{MECHANISM_DIR}/adl.json"
MECHANISM_TRANSPLANT_CSV = f"{MECHANISM_DIR}/transplant.csv"
MECHANISM_TRANSITIONS_DIR = f"{MECHANISM_DIR}/transitions"
MECHANISM_FIGURES = {"depth_profile": f"{MECHANISM_DIR}/depth_profile.png",
                     "transplant": f"{MECHANISM_DIR}/transplant.png"}

# ---------------------------------------------------------------- report
REPORT_HTML = "report.html"
REPORT_MD = "report.md"
REPORT_DIR = "report"
VERDICTS_JSON = f"{REPORT_DIR}/verdicts.json"
REPORT_FIGURES = {
    "sample_efficiency": f"{REPORT_DIR}/sample_efficiency.png",
    "convergence": f"{REPORT_DIR}/convergence.png",
    "transfer": f"{REPORT_DIR}/transfer.png",
}
