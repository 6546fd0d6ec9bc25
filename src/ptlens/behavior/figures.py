"""Behaviour figures from the results dict and the merged samples (matplotlib, Agg backend, PNG).

Colours are the Okabe–Ito palette so that models stay distinguishable for colour-blind readers;
every axis is labelled with its quantity and unit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ptlens.figpool import figure
from ptlens.plotting import OKABE_ITO, save_png
from ptlens.plotting import pyplot as _plt

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def colour(i: int) -> str:
    return OKABE_ITO[i % len(OKABE_ITO)]


@figure
def pass_at_k_figure(results: dict, path: Path) -> Path:
    """pass@k and maj@k against k (log₂ axis) with 95% bootstrap bands."""
    plt = _plt()
    ks = results["ks"]
    fig, ax = plt.subplots(figsize=(7.4, 4.2))
    n = len(results["models"])
    for i, (name, m) in enumerate(results["models"].items()):
        for metric, style in (("pass", "-"), ("maj", "--")):
            est = [m["metrics"][f"{metric}@{k}"] for k in ks]
            y = [e["value"] for e in est]
            # a marker shape per model, earlier models larger and hollow: equal curves stay visible
            ax.plot(ks, y, style, marker=MARKERS[i % len(MARKERS)], ms=4 + 1.5 * (n - 1 - i), color=colour(i),
                    markerfacecolor="none" if i < n - 1 else colour(i), label=f"{name} {metric}@k", zorder=3 + i)
            if metric == "pass" and all(e["lo"] is not None for e in est):
                ax.fill_between(ks, [e["lo"] for e in est], [e["hi"] for e in est], color=colour(i), alpha=0.18, lw=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.set_xlabel("k (samples per problem)")
    ax.set_ylabel("share of problems solved")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("pass@k (solid, 95% band) and maj@k (dashed)")
    _style_legends(ax, list(results["models"]))
    return save_png(fig, path, tight=True, rect=(0, 0, 0.86, 1))  # room on the right for the model legend


def _style_legends(ax, names: Sequence[str]) -> None:
    """Two legends: colour = model, line style = metric (long black handles, so maj@k's dashes show)."""
    from matplotlib.lines import Line2D

    models = [Line2D([], [], color=colour(i), lw=2.5, marker=MARKERS[i % len(MARKERS)], label=n)
              for i, n in enumerate(names)]
    styles = [Line2D([], [], color="black", ls="-", lw=1.5, label="pass@k (95% band)"),
              Line2D([], [], color="black", ls="--", lw=1.5, label="maj@k")]
    first = ax.legend(handles=models, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), title="model",
                      title_fontsize=7)
    ax.add_artist(first)
    ax.legend(handles=styles, fontsize=7, loc="upper left", handlelength=3.5)


@figure
def accuracy_histogram_figure(results: dict, path: Path) -> Path:
    """Per-problem share of correct samples, one bar group per bin and model."""
    plt = _plt()
    models = results["models"]
    labels = list(next(iter(models.values()))["accuracy_histogram"])
    fig, ax = plt.subplots(figsize=(7.2, 4.0))
    width = 0.8 / max(len(models), 1)
    for i, (name, m) in enumerate(models.items()):
        counts = [m["accuracy_histogram"][b] for b in labels]
        ax.bar([x + i * width for x in range(len(labels))], counts, width, color=colour(i), label=name)
    ax.set_xticks([x + 0.4 - width / 2 for x in range(len(labels))], labels, rotation=45, ha="right", fontsize=7)
    ax.set_xlabel("share of a problem's samples that are correct")
    ax.set_ylabel("problems")
    ax.set_title("Per-problem accuracy")
    ax.legend(fontsize=8)
    return save_png(fig, path, tight=True)


@figure
def distributions_figure(records: Sequence, names: Sequence[str], path: Path) -> Path:
    """Histograms of per-response mean token entropy (nats) and response length (tokens).

    An empty response (0 tokens) has no mean entropy: it counts in the length panel (at 0) and is left out of
    the entropy panel, whose legend says how many each model had, so a model that stops at once still gets a figure.
    """
    plt = _plt()
    import numpy as np

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(9.0, 3.8))
    ents = [r.mean_entropy for r in records if r.mean_entropy is not None]
    ent_bins = np.histogram_bin_edges(ents, bins=30) if ents else None
    longest = max((r.tokens for r in records), default=0)
    len_bins = np.histogram_bin_edges([r.tokens for r in records] or [0], bins=max(1, min(30, longest)))
    for i, name in enumerate(names):
        mine = [r for r in records if r.model == name]
        mine_ent = [r.mean_entropy for r in mine if r.mean_entropy is not None]
        empty = len(mine) - len(mine_ent)
        label = f"{name} ({empty} empty left out)" if empty else name
        if mine_ent:
            a1.hist(mine_ent, bins=ent_bins, histtype="step", lw=1.5, color=colour(i), label=label)
        else:
            a1.plot([], [], color=colour(i), lw=1.5, label=f"{name} (all {len(mine)} empty)")
        a2.hist([r.tokens for r in mine], bins=len_bins, histtype="step", lw=1.5, color=colour(i), label=name)
    if not ents:
        a1.text(0.5, 0.5, "no response has a token:\nno entropy to show", transform=a1.transAxes, ha="center",
                va="center", fontsize=9, color="grey")
    a1.set_xlabel("mean token entropy of a response (nats)")
    a1.set_ylabel("responses")
    a1.set_title("Token entropy")
    a2.set_xlabel("response length (tokens)")
    a2.set_ylabel("responses")
    a2.set_title("Length")
    a1.legend(fontsize=8)
    return save_png(fig, path, tight=True)


@figure
def calibration_figure(results: dict, path: Path) -> Path:
    """Reliability diagram: accuracy of the modal answer per confidence bin, against the diagonal."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.0, 4.6))
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect calibration")
    for i, (name, m) in enumerate(results["models"].items()):
        pts = [(b["confidence"], b["accuracy"], b["count"]) for b in m["calibration_bins"] if b["count"]]
        if not pts:
            continue
        ece = m["metrics"]["ece"]["value"]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color=colour(i), ms=3,
                label=f"{name} (ECE {ece:.3f})")
    ax.set_xlabel("answer confidence (share agreeing with the modal answer)")
    ax.set_ylabel("accuracy of the modal answer")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_title("Calibration")
    ax.legend(fontsize=7)
    return save_png(fig, path, tight=True)


@figure
def cross_ppl_figure(results: dict, path: Path) -> Path:
    """Heatmap of cross_ppl[scorer](author): row = whose responses, column = which model scores them."""
    import numpy as np

    plt = _plt()
    names = list(results["models"])
    grid = np.full((len(names), len(names)), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            e = results["cross_ppl"].get(a, {}).get(b)
            if e and e["value"] is not None:
                grid[i, j] = e["value"]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2.4, 1.0 * len(names) + 1.8))
    with np.errstate(divide="ignore", invalid="ignore"):
        im = ax.imshow(np.log(grid), cmap="cividis")
    for i in range(len(names)):
        for j in range(len(names)):
            if np.isfinite(grid[i, j]):
                ax.text(j, i, f"{grid[i, j]:.3g}", ha="center", va="center", fontsize=8,
                        color="white" if np.log(grid[i, j]) < np.nanmean(np.log(grid)) else "black")
            else:  # no tokens to score (empty responses) or not scored: say so rather than leave a blank cell
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="grey")
    ax.set_xticks(range(len(names)), names)
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("scoring model")
    ax.set_ylabel("responses of model")
    ax.set_title("Cross-model perplexity" + ("" if np.isfinite(grid).all() else " (n/a: no tokens scored)"))
    fig.colorbar(im, ax=ax, label="log perplexity")
    return save_png(fig, path, tight=True)


def write_figures(results: dict, records: Sequence, out_dir: Path) -> list[Path]:
    """Every behaviour figure into ``out_dir``; returns the paths of those drawn."""
    out_dir.mkdir(parents=True, exist_ok=True)
    from ptlens.results.files import BEHAVIOR_FIGURES  # every output name is defined there

    names = list(results["models"])
    f = {k: out_dir / Path(v).name for k, v in BEHAVIOR_FIGURES.items()}
    made = [
        pass_at_k_figure(results, f["pass_at_k"]),
        accuracy_histogram_figure(results, f["accuracy_histogram"]),
        distributions_figure(records, names, f["entropy_length"]),
        calibration_figure(results, f["calibration"]),
        cross_ppl_figure(results, f["cross_ppl_heatmap"]),
    ]
    return [p for p in made if p is not None]  # the others are named in figures_not_drawn.json (ptlens.figpool)
