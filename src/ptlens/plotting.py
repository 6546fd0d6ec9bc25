"""What every figure module shares: the Okabe–Ito palette, pyplot on the Agg backend, and one PNG writer.

One writer so that every figure of a run has the same resolution (110 dpi) and no timestamp or
software tag in its metadata: a rebuild writes the same bytes, and report.html, which inlines
the PNGs, stays small. matplotlib is imported on first use, not when this module is.
"""

from __future__ import annotations

from pathlib import Path

OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000")
"""Colours that stay distinguishable for colour-blind readers (Okabe & Ito, 2008)."""

DPI = 110


def pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path, *, tight: bool = False, rect=None) -> Path:
    """Write ``fig`` to ``path`` atomically (a hidden temporary file, then a rename) and close it.

    ``tight`` lays the figure out with ``tight_layout(rect=rect)`` first; figures made with the
    constrained layout leave it off.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout(rect=rect)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    fig.savefig(tmp, dpi=DPI, metadata={"Software": None})
    pyplot().close(fig)
    tmp.replace(path)
    return path
