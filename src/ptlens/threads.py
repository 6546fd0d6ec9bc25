"""How many threads to use, and how they wait: sized to the work and to the cores actually free.

On a shared machine the defaults oversubscribe: torch (OpenMP, spin-waiting ~200 ms after each
parallel region by default), MKL and numba each start one thread per core, whether or not
another process is already using those cores. Spinning threads then burn CPU against each other
and against the neighbour; measured on 2 cores with one busy competitor, ``ptlens run`` took
8–12× its idle wall time. The cure is the same in every library:

- never spin: ``OMP_WAIT_POLICY=PASSIVE``, ``GOMP_SPINCOUNT=0``, ``KMP_BLOCKTIME=0``, set in the
  environment *before* torch, numba or MKL are imported (the runtimes read them once, at load);
- use only the cores that are free: the CPU affinity mask minus the load already running;
- use one thread for small work, where synchronising threads costs more than it saves.

``configure_environment()`` runs first thing in the CLI entry point; ``apply()`` sets the
thread counts of libraries already imported (and is safe to call again later).
``PTLENS_THREADS`` overrides the choice (an integer), as does ``--workers`` on ``ptlens weights``.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Mapping, Optional

NO_SPIN = {"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": "0", "KMP_BLOCKTIME": "0", "MKL_DYNAMIC": "TRUE"}
"""Environment that stops OpenMP/MKL worker threads from busy-waiting between parallel regions."""

COUNT_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "VECLIB_MAXIMUM_THREADS", "NUMBA_NUM_THREADS")

SMALL_WORK = 1 << 22
"""Element count below which one thread is at least as fast as several (a 2048 × 2048 matrix)."""


def usable_cores() -> int:
    """Cores this process may run on (affinity mask, e.g. a cgroup/taskset limit), not the machine's count."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def running_now(samples: int = 3, interval_s: float = 0.005) -> float:
    """Threads runnable right now on the machine, this one excluded (median of a few reads of /proc/stat).

    The 1-minute load average lags: a competitor started a second ago barely shows in it, while
    ``procs_running`` sees it at once. 0 where /proc is unavailable.
    """
    import time

    reads = []
    for i in range(samples):
        try:
            with open("/proc/stat") as f:
                reads.append(next(int(line.split()[1]) for line in f if line.startswith("procs_running")))
        except (OSError, StopIteration, ValueError, IndexError):
            return 0.0
        if i + 1 < samples:
            time.sleep(interval_s)
    reads.sort()
    return max(0.0, reads[len(reads) // 2] - 1.0)


def free_cores(cores: Optional[int] = None, load: Optional[float] = None) -> int:
    """Cores not already busy with other work: ``cores − round(load)``, at least 1.

    ``load`` defaults to the threads runnable right now, this process excluded (``running_now``), not
    the 1-minute load average: that one lags a competitor started a second ago, and it still counts
    the work of a command that ended a few seconds before (a second ``ptlens`` command run after a
    first saw a busy core and took half the threads). It counts machine-wide; where the affinity
    mask is smaller than the machine, the load is scaled to the share of the machine we may use.
    """
    cores = usable_cores() if cores is None else cores
    load = running_now() if load is None else load
    total = os.cpu_count() or cores
    busy = load * cores / max(total, cores)
    return max(1, min(cores, cores - int(math.floor(busy + 0.5))))


def choose_threads(work_elems: Optional[int] = None, cores: Optional[int] = None, load: Optional[float] = None,
                   env: Optional[Mapping[str, str]] = None) -> int:
    """Threads for a piece of work: ``PTLENS_THREADS`` if set, 1 for small work, else the free cores.

    ``work_elems`` is the size of the largest unit of parallel work (entries of a matrix, tokens ×
    hidden size of a batch); None means "large".
    """
    env = os.environ if env is None else env
    forced = env.get("PTLENS_THREADS", "").strip()
    if forced:
        try:
            return max(1, int(forced))
        except ValueError:
            pass
    if work_elems is not None and work_elems < SMALL_WORK:
        return 1
    return free_cores(cores, load)


def configure_environment(threads: Optional[int] = None, env: Optional[dict] = None) -> int:
    """Set the no-spin and thread-count variables for runtimes not yet loaded; returns the thread count.

    Values the user set explicitly are kept. Call before importing torch, numba or numpy's BLAS
    for the wait policy to take effect; thread counts can still be changed later by ``apply``.
    """
    env = os.environ if env is None else env
    n = threads or choose_threads(env=env)
    for k, v in NO_SPIN.items():
        env.setdefault(k, v)
    for k in COUNT_VARS:
        if k == "NUMBA_NUM_THREADS" and "numba" in sys.modules:
            continue  # numba has read it already; changing it now makes numba refuse to start its pool
        env.setdefault(k, str(n))
    return n


def apply(threads: int) -> int:
    """Set torch's intra-op threads and numba's threads in this process (libraries already imported only).

    Inter-op threads stay at 1: ptlens never runs independent torch ops concurrently, and torch
    refuses to change that count once any parallel work has run.
    """
    threads = max(1, int(threads))
    torch = sys.modules.get("torch")
    if torch is not None:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        try:
            if torch.get_num_interop_threads() != 1:
                torch.set_num_interop_threads(1)
        except RuntimeError:
            pass
    numba = sys.modules.get("numba")
    if numba is not None:
        try:
            numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
        except (ValueError, AttributeError):
            pass
    return threads


_chosen: Optional[int] = None
"""The count ``setup`` chose for this process (None: never called, e.g. library use)."""


def setup(threads: Optional[int] = None) -> int:
    """What every CLI command does first: environment for unloaded runtimes, counts for loaded ones."""
    global _chosen
    n = configure_environment(threads)
    _chosen = apply(threads or n)
    return _chosen


def for_work(work_elems: int) -> int:
    """Set and return the thread count for work whose largest unit has ``work_elems`` entries.

    Small work runs on one thread; large work gets the count chosen at start-up (the load measured
    later would include this process's own threads, so it is not measured again).
    """
    if work_elems < SMALL_WORK and not os.environ.get("PTLENS_THREADS", "").strip():
        return apply(1)
    return apply(_chosen or choose_threads())
