"""Weight figures, drawn from summary.json alone so ``ptlens report`` can redraw them.

Each transition has one style in every figure (``transition_styles``): a colour of its own,
solid lines and filled markers for consecutive transitions, dashed or dotted lines with larger
hollow markers for cumulative ones, so that curves lying on top of each other (base→sft,
base→dpo and base→rlvr often do) all stay visible. Layer axes have integer ticks.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import LogFormatter, MaxNLocator  # noqa: E402

from ptlens.figpool import NothingToDraw, figure  # noqa: E402
from ptlens.plotting import save_png  # noqa: E402

GROUP_COLORS = {"attention": "#0072B2", "mlp": "#E69F00", "embedding": "#009E73", "head": "#D55E00",
                "norm": "#CC79A7", "other": "#999999"}
KIND_ORDER = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
              "input_layernorm", "post_attention_layernorm"]
_SHORT = {"input_layernorm": "attn norm", "post_attention_layernorm": "mlp norm"}
METRIC_LABEL = {
    "rel_change": "relative change ‖ΔW‖_F / ‖W_A‖_F",
    "changed_exact": "share of entries changed (bit-exact)",
    "stable_rank_wmean": "stable rank of ΔW (param-weighted mean)",
    "top16_energy_wmean": "top-16 energy of ΔW (param-weighted mean)",
    "principal_overlap_wmean": "principal-weight overlap (pale: null)",
    "subspace_angle_u_mean_wmean": "mean angle between top-k left singular subspaces of W_A, W_B",
}


CONSECUTIVE_COLOURS = ["#0072B2", "#E69F00", "#009E73", "#56B4E9", "#F0E442", "#000000", "#999999"]
CUMULATIVE_COLOURS = ["#D55E00", "#CC79A7", "#882255", "#44AA99", "#AA4499", "#117733"]
CUMULATIVE_LINES = ["--", ":", "-.", (0, (5, 1, 1, 1, 1, 1))]
CUMULATIVE_MARKERS = ["s", "^", "D", "v", "P"]
PAIR_STYLES = [("#444444", ""), ("#999999", "//"), ("#CCCCCC", ".."), ("#666666", "xx"), ("#BBBBBB", "\\\\")]
"""Δ-cosine pairs are not transitions: greys and hatches, so no transition colour means two things."""


def _transitions(summary: dict) -> list[str]:
    ts = summary["transitions"]
    return [t["name"] for t in ts if t["kind"] == "consecutive"] + [t["name"] for t in ts if t["kind"] == "cumulative"]


def transition_styles(summary: dict) -> dict[str, dict]:
    """One matplotlib style per transition, the same in every figure of a run."""
    out = {}
    cons = [t["name"] for t in summary["transitions"] if t["kind"] == "consecutive"]
    cums = [t["name"] for t in summary["transitions"] if t["kind"] == "cumulative"]
    for i, t in enumerate(cons):
        out[t] = dict(color=CONSECUTIVE_COLOURS[i % len(CONSECUTIVE_COLOURS)], ls="-", marker="o", ms=4, lw=1.6,
                      hatch="", mfc=None, zorder=3)
    for i, t in enumerate(cums):
        out[t] = dict(color=CUMULATIVE_COLOURS[i % len(CUMULATIVE_COLOURS)],
                      ls=CUMULATIVE_LINES[i % len(CUMULATIVE_LINES)], marker=CUMULATIVE_MARKERS[i % len(CUMULATIVE_MARKERS)],
                      ms=7 + 2 * i, lw=1.6, hatch="//", mfc="none", zorder=2 - 0.01 * i)
    return out


def _line(ax, xs, ys, style: dict, label: str) -> None:
    ax.plot(xs, ys, linestyle=style["ls"], marker=style["marker"], ms=style["ms"], lw=style["lw"], color=style["color"],
            markerfacecolor=style["mfc"] or style["color"], markeredgewidth=1.2, label=label, zorder=style["zorder"])


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


class PlainLogFormatter(LogFormatter):
    """Log-axis tick labels as plain text, "10⁻³" and "2×10⁻³": matplotlib's default writes them as mathtext,
    whose parsing and layout were a fifth of the time of drawing the weight figures. Same ticks labelled."""

    def _num_to_string(self, x, vmin, vmax):
        if 1 <= x <= 10000:
            return super()._num_to_string(x, vmin, vmax)
        exponent = int(np.floor(np.log10(x) + 1e-9))
        coeff = x / 10.0 ** exponent
        power = "10" + str(exponent).translate(_SUPERSCRIPT)
        if abs(coeff - round(coeff)) < 1e-6:
            coeff = round(coeff)
        return power if coeff == 1 else f"{coeff:.4g}×{power}"  # 2.4×10⁻³ where an axis spans < one step


def _log_scale(axis) -> None:
    """A log scale with plain-text labels (``PlainLogFormatter``) on a y axis (or a colour bar's)."""
    if axis.axes.get_yscale() != "log":  # a colour bar of a LogNorm is log already
        axis.axes.set_yscale("log")
    axis.set_major_formatter(PlainLogFormatter(labelOnlyBase=False))
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False, minor_thresholds=(2, 0.5)))


def _layer_axis(ax) -> None:
    """Layers are integers: no 0.5 ticks."""
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("layer")


def overview_filename(summary: dict) -> str:
    """``sft_vs_rlvr_comparison.png`` when the lineage has an sft and an rlvr stage; else a name that claims no pair."""
    labels = {c.get("label") for c in (summary.get("lineage") or {}).get("checkpoints") or []}
    from ptlens.results import files as F

    return F.OVERVIEW_FIGURE if {"sft", "rlvr"} <= labels else F.OVERVIEW_FIGURE_OTHER


def _rows(summary: dict, agg: str, transition: str) -> list[dict]:
    return [r for r in summary["aggregates"][agg] if r["transition"] == transition]


def _grid(n: int, w: float = 4.2, h: float = 3.6):
    cols = min(n, 3)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(w * cols, h * rows), squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


@figure
def heatmap(summary: dict, metric: str, path: Path) -> Path | None:
    """Layer × module kind, one panel per transition, one colour scale for all panels."""
    trans = _transitions(summary)
    cells = [r for r in summary["aggregates"]["layer_kind"] if r.get(metric) is not None]
    if not cells:
        raise NothingToDraw(f"no {metric} per layer and module (no per-layer tensors matched)")
    layers = sorted({r["key"][0] for r in cells})
    present = {r["key"][1] for r in cells}
    kinds = [k for k in KIND_ORDER if k in present] + sorted(present - set(KIND_ORDER))
    vals = np.array([r[metric] for r in cells], dtype=float)
    log = metric == "rel_change"
    pos = vals[vals > 0]
    norm = LogNorm(vmin=pos.min(), vmax=pos.max()) if log and len(pos) and pos.min() < pos.max() else Normalize(
        vmin=0.0 if not log else float(vals.min()), vmax=max(float(vals.max()), 1e-12))
    fig, axes = _grid(len(trans), w=max(3.8, 0.45 * len(kinds) + 1.5), h=max(3.0, 0.22 * len(layers) + 1.6))
    im = None
    zeros = 0
    for ax, t in zip(axes, trans):
        grid = np.full((len(layers), len(kinds)), np.nan)
        for r in cells:
            if r["transition"] == t:
                grid[layers.index(r["key"][0]), kinds.index(r["key"][1])] = r[metric] if (not log or r[metric] > 0) else np.nan
        im = ax.imshow(grid, aspect="auto", cmap="viridis", norm=norm, origin="lower", interpolation="nearest")
        for r in cells:
            if r["transition"] == t and r[metric] == 0:  # a log scale has no colour for 0, a linear one its darkest
                zeros += 1
                ax.add_patch(Rectangle((kinds.index(r["key"][1]) - 0.5, layers.index(r["key"][0]) - 0.5), 1, 1,
                                       facecolor="#eeeeee", edgecolor="#777777", hatch="xxx", lw=0))
        ax.set_title(t, fontsize=10)
        ax.set_xticks(range(len(kinds)), [_SHORT.get(k, k.replace("_proj", "")) for k in kinds],
                      rotation=60, ha="right", fontsize=8)
        step = max(1, len(layers) // 12)
        ax.set_yticks(range(0, len(layers), step), [str(l) for l in layers[::step]], fontsize=8)
        ax.set_ylabel("layer")
        ax.set_xlabel("module")
    bar = fig.colorbar(im, ax=axes, label=METRIC_LABEL.get(metric, metric), shrink=0.85)
    if isinstance(norm, LogNorm):
        _log_scale(bar.ax.yaxis)
    fig.suptitle(f"{METRIC_LABEL.get(metric, metric)} by layer and module")
    if zeros or np.isnan(vals).any() or len(cells) < len(trans) * len(layers) * len(kinds):
        fig.supxlabel(f"grey hatched: exactly 0 ({zeros} cell{'s' if zeros != 1 else ''}: nothing changed); "
                      "blank: no such tensor", fontsize=8, color="#444444")  # a supxlabel: the layout makes room
    return save_png(fig, path)


@figure
def layer_curves(summary: dict, metric: str, path: Path) -> Path | None:
    trans = _transitions(summary)
    rows = [r for r in summary["aggregates"]["layer_group"] if r.get(metric) is not None]
    if not rows:
        raise NothingToDraw(f"no {metric} per layer (no per-layer tensors matched)")
    fig, axes = _grid(len(trans))
    for ax, t in zip(axes, trans):
        for g in sorted({r["key"][1] for r in rows}):
            pts = sorted((r["key"][0], r[metric]) for r in rows if r["transition"] == t and r["key"][1] == g)
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, label=g, color=GROUP_COLORS.get(g, "#999999"))
        ax.set_title(t, fontsize=10)
        _layer_axis(ax)
        ax.set_ylabel(METRIC_LABEL.get(metric, metric), fontsize=8)
        if metric == "rel_change":
            _log_scale(ax.yaxis)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{METRIC_LABEL.get(metric, metric)} per layer, by module group")
    return save_png(fig, path)


@figure
def spectral_curves(summary: dict, path: Path) -> Path | None:
    k = summary["settings"].get("k", 16)
    metrics = [m for m in ("stable_rank_wmean", f"top{k}_energy_wmean", "principal_overlap_wmean",
                           "subspace_angle_u_mean_wmean")
               if any(m in r for r in summary["aggregates"]["layer"])]
    if not metrics:
        raise NothingToDraw("no spectral metrics per layer (--spectral off, or no 2-D layer matrices)")
    trans = _transitions(summary)
    styles = transition_styles(summary)
    fig, axes = _grid(len(metrics))
    for ax, m in zip(axes, metrics):
        for t in trans:
            pts = sorted((r["key"][0], r[m]) for r in _rows(summary, "layer", t) if r.get(m) is not None)
            if pts:
                _line(ax, *zip(*pts), styles[t], t)
        label = METRIC_LABEL.get(m, m.replace("_wmean", "").replace("_", " ")) + ("" if "angle" not in m else " (°)")
        ax.set_ylabel(label.replace("top-16", f"top-{k}").replace("top-k", f"top-{k}"), fontsize=8)
        _layer_axis(ax)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        if m == "principal_overlap_wmean":
            _null_curves(ax, summary, trans, styles, m)
    fig.suptitle("Spectral structure of the updates, per layer (2-D matrices)")
    return save_png(fig, path)


def _null_curves(ax, summary: dict, trans: list[str], styles: dict, metric: str) -> None:
    """Each transition's null (an unstructured update of the same size, rounded to the dtype) as a thin line of
    its colour: the report judges principal overlap against it, not against 1 (the null is 0.19 for an update
    in bf16 that only survives on small weights). Limits span at least ±0.1 around the data and no offset,
    so noise of ±1e-4 reads as flat."""
    from matplotlib.lines import Line2D

    values = []
    for t in trans:
        rows = _rows(summary, "layer", t)
        pts = sorted((r["key"][0], r[f"{metric}_null"]) for r in rows if r.get(f"{metric}_null") is not None)
        values += [v for r in rows if (v := r.get(metric)) is not None] + [v for _, v in pts]
        if pts:
            ax.plot(*zip(*pts), color=styles[t]["color"], lw=3.0, alpha=0.4, ls="-", zorder=1)
    if values:
        mid = (min(values) + max(values)) / 2
        half = max((max(values) - min(values)) / 2 + 0.05, 0.1)
        ax.set_ylim(mid - half, mid + half)
    ax.ticklabel_format(axis="y", useOffset=False, style="plain")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles + [Line2D([], [], color="#888888", lw=3.0, alpha=0.5)],
              labels + ["wide pale line: its null (unstructured update)"], fontsize=6.5, loc="best")


@figure
def overview(summary: dict, path: Path) -> Path | None:
    """The composite figure: where and how much each transition changed the weights."""
    trans = _transitions(summary)
    styles = transition_styles(summary)
    groups = [g for g in GROUP_COLORS if any(r["key"] == [g] for r in summary["aggregates"]["group"])]
    fig, axes = plt.subplots(2, 2, figsize=(13, 9), layout="constrained")
    width = 0.8 / max(1, len(trans))
    for ax, metric, log in ((axes[0, 0], "rel_change", True), (axes[0, 1], "changed_exact", False)):
        for i, t in enumerate(trans):
            vals = {r["key"][0]: r[metric] for r in _rows(summary, "group", t)}
            ys = [vals.get(g) or 0.0 for g in groups]
            xs = np.arange(len(groups)) + i * width
            ax.bar(xs, ys, width, label=t, color=styles[t]["color"],
                   hatch=styles[t]["hatch"], edgecolor="white", linewidth=0.5)
            _mark_empty_bars(ax, xs, [vals.get(g) for g in groups], styles[t]["color"])
        ax.set_xticks(np.arange(len(groups)) + width * (len(trans) - 1) / 2, groups)
        ax.set_ylabel(METRIC_LABEL[metric])
        if log:
            _log_scale(ax.yaxis)
        else:
            ax.set_ylim(0, 1.05)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7)
    ax = axes[1, 0]
    for t in trans:
        pts = sorted((r["key"][0], r["rel_change"]) for r in _rows(summary, "layer", t) if r.get("rel_change"))
        if pts:
            _line(ax, *zip(*pts), styles[t], t)
    _log_scale(ax.yaxis)
    _layer_axis(ax)
    ax.set_ylabel(METRIC_LABEL["rel_change"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    pairs = [p for p in summary["aggregates"]["delta_cosine_group"] if p["delta_cosine"] is not None]
    labels = list(dict.fromkeys(f"{p['t1']} vs {p['t2']}" for p in pairs))
    pw = 0.8 / max(1, len(labels))
    for i, lab in enumerate(labels):
        vals = {p["key"][0]: p["delta_cosine"] for p in pairs if f"{p['t1']} vs {p['t2']}" == lab}
        colour, hatch = PAIR_STYLES[i % len(PAIR_STYLES)]
        ax.bar(np.arange(len(groups)) + i * pw, [vals.get(g, 0.0) for g in groups], pw, label=lab, color=colour,
               hatch=hatch, edgecolor="#222222", linewidth=0.5)
        _mark_empty_bars(ax, np.arange(len(groups)) + i * pw, [vals.get(g) for g in groups], "#222222", at=0.5)
    ax.axhline(0, color="#333333", lw=0.8)
    ax.set_xticks(np.arange(len(groups)) + 0.4 - pw / 2, groups)
    ax.set_ylabel("cos(ΔW₁, ΔW₂)")
    ax.set_ylim(-1.05, 1.05)
    ax.set_title("Do stages push the weights the same way? (1 = same direction, 0 = unrelated)", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    if labels:
        ax.legend(fontsize=7)
    axes[0, 0].set_title("How much each module group moved", fontsize=10)
    axes[0, 1].set_title("How many entries changed at all", fontsize=10)
    axes[1, 0].set_title("Where in depth the change sits", fontsize=10)
    fig.suptitle("Weight changes per post-training transition (hatched / dashed: cumulative, from the first checkpoint)")
    return save_png(fig, path)


def _mark_empty_bars(ax, xs, values, colour: str, at: float = 0.0) -> None:
    """A bar of exactly 0 has no height (and none at all on a log axis): write "0" where it stands, "–" where
    there is no value; ``at``: the height, as a share of the axis, where a bar starts (0.5 for ±1 axes)."""
    from matplotlib.transforms import blended_transform_factory

    where = blended_transform_factory(ax.transData, ax.transAxes)
    for x, v in zip(xs, values):
        if v is None or v == 0:
            ax.text(x, at + 0.005, "–" if v is None else "0", transform=where, ha="center", va="bottom", fontsize=7,
                    color=colour, fontweight="bold")


def _planned(summary: dict, out: Path) -> dict[str, tuple]:
    """Every weight figure: name → (drawing function, its arguments after the summary)."""
    from ptlens.results.files import WEIGHT_FIGURES as W  # every output name is defined there

    return {
        "heatmap_rel_change": (heatmap, "rel_change", out / W["heatmap_rel_change"]),
        "heatmap_changed_exact": (heatmap, "changed_exact", out / W["heatmap_changed_exact"]),
        "layers_rel_change": (layer_curves, "rel_change", out / W["layers_rel_change"]),
        "layers_changed_exact": (layer_curves, "changed_exact", out / W["layers_changed_exact"]),
        "spectral": (spectral_curves, out / W["spectral"]),
        "overview": (overview, out / overview_filename(summary)),
    }


def draw(name: str, summary_file: str, out_dir: str) -> str | None:
    """One named figure from a summary stored as JSON (what a :class:`ptlens.figpool.FigurePool` worker runs)."""
    import json

    summary = json.loads(Path(summary_file).read_text())
    func, *args = _planned(summary, Path(out_dir))[name]
    made = func(summary, *args)
    return None if made is None else str(made)


def weight_figures(summary: dict, out_dir: Path) -> dict[str, Path]:
    """Every weight figure under ``out_dir``, drawn in this process (see :func:`ptlens.weights.outputs.draw_figures`)."""
    made = {n: func(summary, *args) for n, (func, *args) in _planned(summary, Path(out_dir)).items()}
    return {k: v for k, v in made.items() if v is not None}
