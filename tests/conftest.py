"""Suite-wide rules.

With ``PTLENS_REQUIRE_CAPABILITIES=1`` (``.ci/run`` sets it) a skipped test fails: the vLLM, Ray and Chromium tests
skip with a note on a machine without them, and CI must not pass by skipping what the README promises. A test
that may legitimately skip even there carries ``@pytest.mark.may_skip``.
"""

from __future__ import annotations

import os

import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "may_skip: a skip that is acceptable even where every capability is required")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if (rep.skipped and not hasattr(rep, "wasxfail") and os.environ.get("PTLENS_REQUIRE_CAPABILITIES") == "1"
            and item.get_closest_marker("may_skip") is None):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped, but PTLENS_REQUIRE_CAPABILITIES=1 requires it to run: {reason}"
