"""Figure properties checked on the matplotlib Figure objects: integer layer ticks, no offset on the
principal-overlap axis, one style per transition, legends that show what the lines mean, file names."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")

from ptlens.behavior import figures as BF  # noqa: E402
from ptlens.weights import figures as WF  # noqa: E402

LAYERS = 4
TRANS = [("base→sft", "consecutive"), ("sft→dpo", "consecutive"), ("dpo→rlvr", "consecutive"),
         ("base→dpo", "cumulative"), ("base→rlvr", "cumulative")]
GROUPS = ["attention", "mlp", "embedding", "head", "norm"]


def summary(labels=("base", "sft", "dpo", "rlvr")) -> dict:
    """A summary.json shaped dict whose cumulative curves coincide and whose principal overlap is 1 ± 1e-4."""
    agg = {k: [] for k in ("model", "group", "layer", "layer_group", "layer_kind", "delta_cosine_group")}
    for i, (t, _) in enumerate(TRANS):
        rel = 0.1 if t.startswith("base") else 0.001 * (i + 1)
        for g in GROUPS:
            agg["group"].append({"transition": t, "key": [g], "rel_change": rel, "changed_exact": 0.9})
        for layer in range(LAYERS):
            agg["layer"].append({"transition": t, "key": [layer], "rel_change": rel * (1 + 0.1 * layer),
                                 "stable_rank_wmean": 5.0, "top16_energy_wmean": 0.8,
                                 "principal_overlap_wmean": 1.0 + (-1) ** (layer + i) * 1e-4,
                                 "subspace_angle_u_mean_wmean": 8.0})
            for g in ("attention", "mlp"):
                agg["layer_group"].append({"transition": t, "key": [layer, g], "rel_change": rel,
                                           "changed_exact": 0.9})
                agg["layer_kind"].append({"transition": t, "key": [layer, "q_proj" if g == "attention" else "up_proj"],
                                          "rel_change": rel, "changed_exact": 0.9})
    for t1, t2 in (("base→sft", "sft→dpo"), ("sft→dpo", "dpo→rlvr"), ("base→sft", "dpo→rlvr")):
        for g in GROUPS:
            agg["delta_cosine_group"].append({"t1": t1, "t2": t2, "key": [g], "delta_cosine": 0.2})
    return {"transitions": [{"name": t, "kind": k} for t, k in TRANS], "aggregates": agg, "settings": {"k": 16},
            "lineage": {"checkpoints": [{"label": l, "name": l} for l in labels]}}


@pytest.fixture
def captured(monkeypatch):
    figs = []
    monkeypatch.setattr(WF, "save_png", lambda fig, path, **kw: figs.append(fig) or path)
    monkeypatch.setattr(BF, "save_png", lambda fig, path, **kw: figs.append(fig) or path)
    yield figs
    for f in figs:
        WF.plt.close(f)


def _layer_axes(fig):
    return [ax for ax in fig.axes if ax.get_xlabel() == "layer"]


def test_layer_axes_have_integer_ticks(captured, tmp_path):
    s = summary()
    WF.layer_curves(s, "rel_change", tmp_path / "a.png")
    WF.spectral_curves(s, tmp_path / "b.png")
    WF.overview(s, tmp_path / "c.png")
    axes = [ax for f in captured for ax in _layer_axes(f)]
    assert len(axes) >= 5 + 4 + 1
    for ax in axes:
        ax.figure.canvas.draw()
        lo, hi = ax.get_xlim()
        ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
        assert ticks and all(float(t).is_integer() for t in ticks), ticks


def test_principal_overlap_is_drawn_against_its_null_without_offset(captured, tmp_path):
    """The report judges principal overlap against its null (0.19 on a bf16 DPO update), not against 1: the figure
    draws each transition's null in its colour, and no '1 = chance' line."""
    s = summary()
    for r in s["aggregates"]["layer"]:
        r["principal_overlap_wmean_null"] = 0.19 if r["transition"] == "sft→dpo" else 1.0
    WF.spectral_curves(s, tmp_path / "s.png")
    (fig,) = captured
    ax = next(a for a in fig.axes if "principal" in a.get_ylabel())
    fig.canvas.draw()
    assert ax.yaxis.get_offset_text().get_text() == ""
    colour = matplotlib.colors.to_hex(WF.transition_styles(s)["sft→dpo"]["color"])
    nulls = [l for l in ax.get_lines() if l.get_alpha() and l.get_alpha() < 1]
    assert len(nulls) == len(TRANS)
    dpo = [l for l in nulls if matplotlib.colors.to_hex(l.get_color()) == colour]
    assert len(dpo) == 1 and list(dpo[0].get_ydata()) == [0.19] * LAYERS
    lo, hi = ax.get_ylim()
    assert lo < 0.19 and hi > 1.0001 and hi - lo < 1.2  # the nulls inside; ±1e-4 noise stays flat at that scale
    assert not [t for t in ax.texts if "chance" in t.get_text()]
    assert "its null" in " ".join(t.get_text() for t in ax.get_legend().get_texts())


def test_zero_cells_and_bars_are_marked(captured, tmp_path):
    s = summary()
    for r in s["aggregates"]["layer_kind"]:
        if r["transition"] == "sft→dpo" and r["key"][1] == "up_proj":
            r["rel_change"] = 0.0
    for r in s["aggregates"]["group"]:
        if r["transition"] == "sft→dpo" and r["key"] == ["norm"]:
            r["rel_change"] = r["changed_exact"] = 0.0
    WF.heatmap(s, "rel_change", tmp_path / "h.png")
    WF.overview(s, tmp_path / "o.png")
    heat, over = captured
    hatched = [p for ax in heat.axes for p in ax.patches if p.get_hatch()]
    assert len(hatched) == LAYERS  # one per zero cell, in the sft→dpo panel only
    assert {p.axes.get_title() for p in hatched} == {"sft→dpo"}
    assert "exactly 0 (4 cells" in heat._supxlabel.get_text()
    for ax in over.axes[:2]:  # both bar panels say 0 where the sft→dpo norm bar has no height
        assert [t.get_text() for t in ax.texts] == ["0"]


def test_transplant_legend_leaves_the_bars_free(tmp_path, monkeypatch):
    from ptlens.mechanism import figures as MF

    seen = []
    monkeypatch.setattr(MF, "save_png", lambda fig, path, **kw: seen.append(fig) or path)
    rows = [{"row": "part", "transition": "sft→dpo", "partition": "groups", "part": p, "kl_recovered": v,
             "kl_recovered_lo": v - 0.05, "kl_recovered_hi": min(v + 0.05, 1.0), "delta_share": 0.3,
             "kl_recovered_lo_fw": v - 0.08, "acc_recovered": None} for p, v in (("attention", 0.2), ("mlp", 0.97),
                                                                                 ("norm", 0.0))]
    MF.transplant_figure(rows, tmp_path / "t.png")
    (fig,) = seen
    ax = fig.axes[0]
    fig.canvas.draw()
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert legend.x0 >= axes_box.x1  # beside the axes: the main carrier's bar (mlp, 0.97, upper right) stays whole
    assert [t.get_text() for t in ax.texts] == ["0"]
    WF.plt.close(fig)


def test_figures_not_drawn_are_named_with_why(tmp_path):
    """A figure that raises costs no run: it is listed with its reason in figures_not_drawn.json beside the figures,
    and the entry goes once the figure is drawn; the console lists failures apart from figures with no data."""
    import io
    import json

    from rich.console import Console

    from ptlens.cli import kit as cli
    from ptlens.figpool import NOT_DRAWN, figures_not_drawn

    s = summary()
    out = tmp_path / "weights"
    broken = {**s, "aggregates": {**s["aggregates"], "group": [{"transition": "base→sft", "key": ["mlp"]}]}}
    assert WF.overview(broken, out / "overview.png") is None  # KeyError 'rel_change', caught
    s_off = {**s, "aggregates": {**s["aggregates"], "layer": [{"transition": t, "key": [0], "rel_change": 0.1}
                                                              for t, _ in TRANS]}}
    assert WF.spectral_curves(s_off, out / "spectral.png") is None
    notes = json.loads((out / NOT_DRAWN).read_text())
    assert notes["overview.png"] == "failed: KeyError: 'rel_change'"
    assert notes["spectral.png"].startswith("nothing to draw: no spectral metrics per layer (--spectral off")
    assert figures_not_drawn(tmp_path) == {"weights/overview.png": notes["overview.png"],
                                           "weights/spectral.png": notes["spectral.png"]}
    buf = io.StringIO()
    old = cli.console
    cli.console = Console(file=buf, width=200, color_system=None)
    try:
        assert cli.print_figures_not_drawn(tmp_path) == 1
    finally:
        cli.console = old
    text = buf.getvalue()
    assert "1 figure(s) not drawn" in text and "weights/overview.png: failed: KeyError: 'rel_change'" in text
    assert "no data for: weights/spectral.png (no spectral metrics per layer" in text
    assert WF.overview(s, out / "overview.png") is not None and WF.spectral_curves(s, out / "spectral.png")
    assert not (out / NOT_DRAWN).exists()  # every figure drawn: nothing listed


def test_cumulative_curves_stay_distinguishable_and_colours_mean_one_thing(captured, tmp_path):
    s = summary()
    WF.overview(s, tmp_path / "o.png")
    (fig,) = captured
    depth = next(a for a in fig.axes if a.get_xlabel() == "layer")
    lines = {l.get_label(): l for l in depth.get_lines()}
    looks = {(str(lines[t].get_linestyle()), lines[t].get_marker()) for t in ("base→sft", "base→dpo", "base→rlvr")}
    assert len(looks) == 3  # the three overlapping cumulative curves differ in line style and marker
    colours = {t: matplotlib.colors.to_hex(lines[t].get_color()) for t, _ in TRANS}
    assert len(set(colours.values())) == len(TRANS)
    bars = fig.axes[0]
    for patch_label, container in zip([t for t, _ in TRANS], bars.containers):
        assert matplotlib.colors.to_hex(container.patches[0].get_facecolor()) == colours[patch_label]
    cos = next(a for a in fig.axes if "cos" in a.get_ylabel())
    pair_colours = {matplotlib.colors.to_hex(c.patches[0].get_facecolor()) for c in cos.containers}
    assert not pair_colours & set(colours.values())  # a cosine pair never wears a transition's colour


def test_overview_file_is_named_for_what_it_compares():
    assert WF.overview_filename(summary()) == "sft_vs_rlvr_comparison.png"
    assert WF.overview_filename(summary(("base", "sft", "dpo"))) == "weight_changes_overview.png"


def test_pass_at_k_legend_shows_the_maj_dashes(captured, tmp_path):
    e = lambda v: {"value": v, "lo": v - 0.05, "hi": v + 0.05}
    ks = [1, 2, 4]
    models = {n: {"metrics": {**{f"pass@{k}": e(0.3 + 0.1 * k / 4) for k in ks},
                              **{f"maj@{k}": e(0.3) for k in ks}}} for n in ("sft", "rlvr")}
    BF.pass_at_k_figure({"ks": ks, "models": models}, tmp_path / "p.png")
    (fig,) = captured
    ax = fig.axes[0]
    legends = [c for c in ax.get_children() if isinstance(c, matplotlib.legend.Legend)]
    entries = {t.get_text(): h for lg in legends for t, h in zip(lg.get_texts(), lg.legend_handles)}
    assert {"sft", "rlvr", "pass@k (95% band)", "maj@k"} <= set(entries)
    assert entries["maj@k"].get_linestyle() == "--" and entries["pass@k (95% band)"].get_linestyle() == "-"
    assert max(lg.handlelength or 0 for lg in legends) >= 3  # long enough for a dash pattern to show


def test_log_tick_labels_are_plain_text():
    """Log axes label ticks as "10⁻³" / "2×10⁻³" without mathtext (a fifth of the figures' drawing time)."""
    import matplotlib.pyplot as plt

    from ptlens.weights.figures import PlainLogFormatter, _log_scale

    fig, ax = plt.subplots()
    ax.plot([1, 2], [1e-4, 3e-2])
    _log_scale(ax.yaxis)
    assert ax.get_yscale() == "log" and isinstance(ax.yaxis.get_major_formatter(), PlainLogFormatter)
    fig.canvas.draw()
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert "10⁻³" in labels and "10⁻²" in labels and not any("$" in t for t in labels)
    f = ax.yaxis.get_major_formatter()
    assert f._num_to_string(2e-3, 1e-4, 1e-1) == "2×10⁻³"
    assert f._num_to_string(2.4e-3, 2.2e-3, 3.1e-3) == "2.4×10⁻³"  # an axis spanning less than one step
    assert f._num_to_string(1e-12, 1e-13, 1e-11) == "10⁻¹²"
    assert f._num_to_string(100.0, 1, 1000) == "100"
    plt.close(fig)
