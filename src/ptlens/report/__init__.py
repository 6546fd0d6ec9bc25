"""The report: verdicts for the plan's key questions, report.html, report.md, from stored results.

``build_report(out_dir)`` is what ``ptlens report DIR`` and the last step of ``ptlens run`` call.
"""

from ptlens.report.build import build_report
from ptlens.report.verdicts import Check, Criteria, Evidence, Verdict, all_verdicts

__all__ = ["Check", "Criteria", "Evidence", "Verdict", "all_verdicts", "build_report"]
