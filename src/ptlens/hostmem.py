"""How much memory this machine can still give: the kernel's MemAvailable, capped by a cgroup v2 limit when the
process runs under one (a container's limit is what an allocation meets first), and ``PTLENS_MEMORY_BUDGET``,
which replaces it. Core: the weight scan's ``full`` check and the behaviour step's memory plan both read them."""

from __future__ import annotations

import os
import re

from ptlens.errors import PtlensError

BUDGET_ENV = "PTLENS_MEMORY_BUDGET"
"""Memory a step may use on each device (bytes, or with a unit: 500MB, 80GiB), instead of what the machine reports:
to plan for another machine, or to leave room for other work."""
_UNITS = {"": 1, "B": 1, "KB": 10 ** 3, "MB": 10 ** 6, "GB": 10 ** 9, "TB": 10 ** 12, "KIB": 2 ** 10, "MIB": 2 ** 20,
          "GIB": 2 ** 30, "TIB": 2 ** 40}


def parse_bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([KMGT]?I?B?)\s*", text.upper())
    if not m or m.group(2) not in _UNITS:
        raise PtlensError(f"{BUDGET_ENV}: expected bytes such as 500MB or 80GiB, got {text!r}")
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def memory_budget() -> int | None:
    """``PTLENS_MEMORY_BUDGET`` in bytes, or None when unset. The old ``PTLENS_MEMORY_MB`` is refused with its new
    name rather than ignored, so that a limit a user set is never silently dropped."""
    if os.environ.get("PTLENS_MEMORY_MB", "").strip():
        raise PtlensError(f"PTLENS_MEMORY_MB was renamed: set {BUDGET_ENV} instead (bytes or with a unit, e.g. "
                          f"{os.environ['PTLENS_MEMORY_MB'].strip()}MiB)")
    text = os.environ.get(BUDGET_ENV, "").strip()
    return parse_bytes(text) if text else None


def host_available() -> tuple[int, str]:
    """(bytes, where that figure comes from)."""
    avail, source = None, "available"
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    if avail is None:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        if limit != "max":
            with open("/sys/fs/cgroup/memory.current") as f:
                used = int(f.read())
            if int(limit) - used < avail:
                avail, source = int(limit) - used, "available under the cgroup limit"
    except (OSError, ValueError):
        pass
    return int(avail), source
