"""The ``ptlens lab`` command: builds a ``LabConfig`` from its options and calls ``run_lab``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ptlens.cli.kit import option, user_errors
from ptlens.errors import PtlensError
from ptlens.lab.config import LabConfig


@user_errors
def lab(
    output_dir: Optional[Path] = option(LabConfig, "output_dir", "-o", default=None),  # None: --ship may go alone
    quick: bool = option(LabConfig, "quick"),
    controlled: bool = option(LabConfig, "controlled"),
    seed: int = option(LabConfig, "seed"),
    threads: int = option(LabConfig, "threads"),
    ship: bool = typer.Option(False, "--ship", help="Write into the package's data/tiny folder: the default lineage of `ptlens run`."),
) -> None:
    """Train a tiny lineage on CPU (base → SFT → DPO → RLVR with TRL) that ptlens can analyse."""
    from ptlens.lab.runner import require_lab_deps, run_lab
    from ptlens.pipeline import preflight
    from ptlens.resolve.tiny import SHIPPED

    if ship and (output_dir is not None or quick or controlled):
        raise PtlensError("--ship writes the default lab run into the package: "
                          "it takes no --output-dir, --quick or --controlled")
    config = LabConfig(output_dir=SHIPPED if ship else (output_dir or LabConfig.output_dir), seed=seed, quick=quick,
                       controlled=controlled, threads=threads)
    preflight(config, output_dir=None if ship else config.output_dir)
    require_lab_deps()
    err = Console(stderr=True)
    start = time.perf_counter()

    def progress(msg: str) -> None:
        err.print(f"[dim]{time.perf_counter() - start:6.1f}s[/] {escape(msg)}", highlight=False)

    manifest = run_lab(config, progress=progress)
    _summary(Console(), manifest)
    err.print(f"analyse it: [bold]ptlens run --preset {escape(str(manifest))}[/]", highlight=False)
    if controlled:
        _summary(Console(), manifest.parent / "controlled" / "lineage.json")


def _summary(out: Console, manifest: Path) -> None:
    data = json.loads(manifest.read_text())
    t = Table(title=f"[bold]{escape(str(manifest))}[/]", title_justify="left")
    for col in ("stage", "steps", "data", "lr", "wall s", "greedy: in / held-out", "sampled: in / held-out"):
        t.add_column(col)
    for s in data["stages"]:
        f = s["facts"]
        items = ", ".join(f"{f[k]:,} {k}" for k in ("examples", "pairs", "prompts", "episodes") if f.get(k))
        acc = [" / ".join(f"{by_tag[k]:.0%}" if k in by_tag else "–" for k in ("in-distribution", "held-out"))
               for by_tag in s.get("accuracy", {}).values()]
        t.add_row(s["label"], str(s.get("steps", "")), items, f"{f.get('learning_rate', 0):g}",
                  f"{s.get('wall_time_s', 0):.0f}", *acc)
    out.print(t)
    for c in data.get("comparisons", []):
        d = (c.get("in-distribution") or {}).get("t0.6")
        if d and d.get("lo") is not None:
            out.print(f"{c['pair']}: sampled in-distribution accuracy {d['value']:+.3f} [{d['lo']:+.3f}, {d['hi']:+.3f}]")
    for w in data.get("warnings", []):
        out.print(f"[yellow]warning[/] {escape(w['message'])}")
