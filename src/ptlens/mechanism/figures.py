"""Mechanism figures from the stored rows: depth profiles per transition and the transplant chart.

matplotlib (Agg), Okabe–Ito colours, PNG without a timestamp so a rebuild writes the same bytes.
"""

from __future__ import annotations

import math
from pathlib import Path

from ptlens.figpool import NothingToDraw, figure
from ptlens.plotting import OKABE_ITO, save_png
from ptlens.plotting import pyplot as _plt



def _v(x) -> float:
    return float("nan") if x is None or x == "" else float(x)


@figure
def depth_figure(layer_rows: list[dict], path: Path) -> Path | None:
    """Three panels against depth (layer −1 = embeddings): 1 − CKA, relative activation change, logit-lens KL."""
    if not layer_rows:
        raise NothingToDraw("no activation rows")
    plt = _plt()
    trans = list(dict.fromkeys(r["transition"] for r in layer_rows))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    panels = (("cka", "1 − CKA", lambda v: 1 - v), ("act_rel_diff", "‖h_B − h_A‖ / ‖h_A‖ (mean over tokens)", None),
              ("logit_lens_kl", "logit-lens KL(p_A ‖ p_B) (nats/token)", None))
    for ax, (key, label, f) in zip(axes, panels):
        for i, t in enumerate(trans):
            rs = [r for r in layer_rows if r["transition"] == t]
            x = [int(r["layer"]) for r in rs]
            y = [_v(r[key]) for r in rs]
            if f:
                y = [f(v) for v in y]
            ax.plot(x, y, "-o", ms=3, color=OKABE_ITO[i % len(OKABE_ITO)], label=t)
        ax.set_xlabel("layer (−1 = embedding output)")
        ax.set_ylabel(label)
        ys = [1 - _v(r[key]) if key == "cka" else _v(r[key]) for r in layer_rows]
        if any(v > 0 for v in ys if math.isfinite(v)):  # stages differ by orders of magnitude
            ax.set_yscale("symlog", linthresh=1e-6 if key == "cka" else 1e-4)
        ax.grid(alpha=0.3)
    axes[0].set_title("representation change (0 = same up to rotation/scale)", fontsize=9)
    axes[1].set_title("activation change", fontsize=9)
    axes[2].set_title("next-token readout change per layer", fontsize=9)
    axes[0].legend(fontsize=7)
    return save_png(fig, path, tight=True)


def _accuracy_changed(rows: list[dict], transition: str) -> bool:
    """Whether B's paired accuracy difference to A has a 95% interval excluding 0 (else there is nothing to share)."""
    b = [r for r in rows if r["transition"] == transition and r.get("row") == "model"][-1:]
    if not b:
        return False
    lo, hi = _v(b[0].get("acc_change_lo")), _v(b[0].get("acc_change_hi"))
    return math.isfinite(lo) and math.isfinite(hi) and (lo > 0 or hi < 0)


@figure
def transplant_figure(rows: list[dict], path: Path) -> Path | None:
    """Per transition: each part's share of the KL distance recovered (bars, 95% interval) and its ΔW² share (dots).

    The share of the accuracy change (circles) is drawn only where B's accuracy differs from A's
    (paired 95% interval excluding 0).
    """
    parts = [r for r in rows if r.get("row") == "part"]
    if not parts:
        raise NothingToDraw("no transplant rows (--no-transplant)")
    plt = _plt()
    trans = list(dict.fromkeys(r["transition"] for r in parts))
    fig, axes = plt.subplots(len(trans), 1, figsize=(11.5, 2.6 * len(trans)), squeeze=False)
    for ax, t in zip(axes[:, 0], trans):
        rs = [r for r in parts if r["transition"] == t]
        x = list(range(len(rs)))
        y = [_v(r["kl_recovered"]) for r in rs]
        lo = [_v(r["kl_recovered_lo"]) for r in rs]
        hi = [_v(r["kl_recovered_hi"]) for r in rs]
        colours = [OKABE_ITO[0] if r["partition"] == "groups" else OKABE_ITO[1] for r in rs]
        ax.bar(x, [0 if math.isnan(v) else v for v in y], color=colours, alpha=0.85)
        err = [[max(0.0, v - l) if math.isfinite(l) else 0 for v, l in zip(y, lo)],
               [max(0.0, h - v) if math.isfinite(h) else 0 for v, h in zip(y, hi)]]
        ax.errorbar(x, [0 if math.isnan(v) else v for v in y], yerr=err, fmt="none", ecolor="black", lw=1)
        ax.plot(x, [_v(r["delta_share"]) for r in rs], "D", color=OKABE_ITO[3], ms=5, label="share of ‖ΔW‖²")
        from ptlens.mechanism.criteria import CARRY_SHARE

        fw = [_v(r.get("kl_recovered_lo_fw")) for r in rs]
        if any(math.isfinite(v) for v in fw):  # what a "carries" claim reads: this bound against CARRY_SHARE
            ax.plot(x, fw, "_", color="black", ms=16, mew=2, label=f"family-wise lower bound (carries: ≥ {CARRY_SHARE:g})")
            ax.axhline(CARRY_SHARE, color="grey", lw=0.8, ls=":")
        acc = [_v(r["acc_recovered"]) for r in rs]
        if _accuracy_changed(rows, t) and any(math.isfinite(v) for v in acc):
            ax.plot(x, acc, "o", mfc="none", color="black", ms=6, label="share of accuracy change")
        ax.axhline(1, color="grey", lw=0.8, ls="--")
        ax.axhline(0, color="grey", lw=0.8)
        ax.set_xticks(x, [r["part"] for r in rs], rotation=20, fontsize=8)
        ax.set_ylabel("share recovered")
        ax.set_title(f"{t}: A + ΔW[part] (blue: module groups, orange: layer blocks; bars = share of KL(B‖A) removed, "
                     "95% interval)", fontsize=8)
        for xi, v in zip(x, y):  # a bar of exactly 0 (or none) has no height: say so
            if not math.isfinite(v) or v == 0:
                ax.annotate("n/a" if not math.isfinite(v) else "0", (xi, 0), xytext=(0, 2), textcoords="offset points",
                            ha="center", va="bottom", fontsize=7, color="#444444")
        # the legend beside the axes: inside, it hid the top of the main carrier's bar (near 1, upper right)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return save_png(fig, path, tight=True)


def write_figures(summary: dict, folder: Path) -> dict[str, Path]:
    from ptlens.results.files import MECHANISM_FIGURES  # every output name is defined there

    out = {}
    p = depth_figure(summary.get("layers") or [], folder / Path(MECHANISM_FIGURES["depth_profile"]).name)
    if p:
        out["depth_figure"] = p
    p = transplant_figure(summary.get("transplant") or [], folder / Path(MECHANISM_FIGURES["transplant"]).name)
    if p:
        out["transplant_figure"] = p
    return out
