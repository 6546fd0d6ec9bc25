"""What the CLI's help says about run times agrees with the measurement in docs/LAB.md and the shipped run's
own record (lineage.json)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from typer.testing import CliRunner

from ptlens.cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_lab_duration_is_the_measured_one_everywhere():
    shipped = json.loads((ROOT / "src/ptlens/data/tiny/lineage.json").read_text())
    seconds = round(shipped["wall_time_s"])
    lab_md = (ROOT / "docs/LAB.md").read_text()
    assert f"{seconds:,} s on 2 cores" in lab_md
    minutes = f"{seconds // 60} min"
    help_text = " ".join(CliRunner().invoke(app, ["lab", "--help"], terminal_width=200).output.split())
    readme = " ".join((ROOT / "README.md").read_text().split())
    for text in (help_text, readme):
        assert f"{minutes} ({seconds:,} s" in text
        assert not re.search(r"~\s?1[0-9]\b|17 min 30", text)
