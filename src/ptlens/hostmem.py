"""How much memory this machine can still give: the kernel's MemAvailable, capped by a cgroup v2 limit when the
process runs under one (a container's limit is what an allocation meets first). Core: the weight scan's ``full``
check and the behaviour step's memory plan both read it."""

from __future__ import annotations

import os


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
