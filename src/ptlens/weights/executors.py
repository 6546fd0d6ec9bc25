"""Where the weight scan's tasks run: one registry, one class per way of running them.

An executor takes the plan's ``TensorTask``s and returns their ``TensorResult``s (any order;
``records.merge_results`` restores the plan's). Tasks are plain data and ``tensor_scan.scan_tensor`` is a pure
function of its task, so an executor only decides *where* each runs and how often it is retried:

- ``local`` (default): one after another in this process, the next tensor's bytes prefetched
  while the current one computes; threads as ``--workers`` / ``ptlens.threads`` choose.
- ``ray``: one Ray task per tensor on the cluster of ``RAY_ADDRESS`` (a local one started by
  ``ray.init()`` when unset), each sized by Ray resources — ``num_cpus`` (= ``--workers``,
  default 1, also the task's thread count), ``memory`` from the tensor's size (``task_memory``),
  one GPU when the scan's device is CUDA — and retried up to ``max_retries`` times when its
  worker dies. Each worker opens the checkpoint files itself, at the paths the driver planned
  with: the files must be at the same path on every node (a shared filesystem, or the same HF
  cache layout).

Each result comes back to the driver, which hands it to ``on_result`` as soon as it arrives: the scan
journals finished tensors there (``driver.open_scan_journal``), so a killed scan resumes whichever
executor ran it.

A new executor is one class with ``name`` and ``map(tasks, progress, on_result)``, added to ``EXECUTORS``.
"""

from __future__ import annotations

import os
from typing import Callable, Sequence

from ptlens.errors import PtlensError

StepProgress = Callable[[int, str], None]
OnResult = Callable[[object], None]
"""Called in the driver with each ``TensorResult`` as it arrives (the scan journal)."""
RAY_HINT = "--executor ray needs Ray, which is not installed here: pip install 'ptlens[ray]'"


class LocalExecutor:
    """Every task in this process, in plan order: the streaming scan as it always ran."""

    name = "local"

    def map(self, tasks: Sequence, progress: StepProgress | None = None, on_result: OnResult | None = None) -> list:
        from ptlens.weights.memory import _return_freed_memory
        from ptlens.weights.tensor_scan import scan_tensor

        if tasks and tasks[0].config.workers:
            from ptlens.threads import apply

            apply(tasks[0].config.workers)
        out = []
        with _return_freed_memory():
            for i, task in enumerate(tasks):
                if i + 1 < len(tasks):
                    prefetch(tasks[i + 1])
                out.append(scan_tensor(task, progress))
                if on_result:
                    on_result(out[-1])
        return out


def prefetch(task) -> None:
    """Ask the kernel to start reading a task's bytes from disk, so the next tensor's I/O overlaps this one's compute."""
    if not hasattr(os, "posix_fadvise"):
        return
    for info in task.infos:
        if info is None or info.start < 0:
            continue
        try:
            fd = os.open(info.file, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.posix_fadvise(fd, info.start, info.nbytes, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)


_MIB = 1 << 20
_OVERHEAD = 384 * _MIB  # a worker's interpreter with torch and numba loaded


def task_memory(task) -> int:
    """Peak bytes one task may hold, for Ray's ``memory`` resource (scheduling, not a hard limit).

    From the scan's own bounds: the element-wise pass holds one float32 chunk per checkpoint plus
    its bit patterns; ``topk`` holds the matrices resident when they fit ``spectral_resident_mb``,
    else a spool of one chunk per W and ΔW; ``full`` materialises W_A, W_B and ΔW with SVD
    workspace (about 4 float32 copies of the matrix at once). Never more than a matrix's worth per
    term, so small tensors ask for little and many run side by side.
    """
    cfg = task.config
    present = [i for i in task.infos if i is not None]
    n = len(present)
    elems = max(i.numel for i in present) if present else 0
    matrix = 4 * elems
    chunk = min(cfg.chunk_mb * _MIB, matrix)
    need = 2 * n * chunk
    matrix_task = bool(present) and len(present[0].shape) == 2
    if cfg.spectral == "topk" and matrix_task:
        deltas = len(task.transitions)
        need += max(min((n + 1) * matrix, cfg.spectral_resident_mb * _MIB), (n + deltas) * chunk)
    elif cfg.spectral == "full" and matrix_task:
        need += 4 * matrix
    return _OVERHEAD + need


def _run_task(task, threads: int):
    """A Ray task's body: thread settings for this worker, then the pure per-tensor scan."""
    from ptlens import threads as T

    T.configure_environment(threads)  # no-spin waits for runtimes this worker has not loaded yet
    return _scan_here(task, threads)


def _scan_here(task, threads: int):
    """A task in this process on ``threads`` threads, the environment left as it is (the driver's share of a Ray scan)."""
    from ptlens.threads import apply
    from ptlens.weights.memory import _return_freed_memory
    from ptlens.weights.tensor_scan import scan_tensor

    apply(threads)
    with _return_freed_memory():
        return scan_tensor(task)


def import_ray():
    try:
        import ray
    except ImportError:
        raise PtlensError(RAY_HINT) from None
    return ray


class RayExecutor:
    """One Ray task per tensor, resources sized per task, retried when a worker dies."""

    name = "ray"
    task_fn = staticmethod(_run_task)  # what each Ray task runs; a subclass may wrap it

    def __init__(self, address: str | None = None, num_cpus: int | None = None, max_retries: int = 3,
                 driver_helps: bool = True):
        self.address = address
        self.num_cpus = num_cpus
        self.max_retries = max_retries
        self.driver_helps = driver_helps

    def options(self, task) -> dict:
        """Ray resources and retry policy of one task."""
        cpus = self.num_cpus or task.config.workers or 1
        opts = {"num_cpus": cpus, "memory": task_memory(task), "max_retries": self.max_retries,
                "retry_exceptions": False}  # a PtlensError (corrupt file) fails at once; a dead worker is retried
        if task.device.startswith("cuda"):
            opts["num_gpus"] = 1
        return opts

    def map(self, tasks: Sequence, progress: StepProgress | None = None, on_result: OnResult | None = None) -> list:
        """Largest tasks to Ray first; the driver itself scans the smallest ones until Ray's first result.

        New Ray worker processes spend seconds importing torch and numba before their first task: the
        driver, idle meanwhile, takes tasks from the small end of the queue (with the workers' thread
        count, so every value is computed the same way whichever process ran it) and stops as soon as a
        worker delivers, so that it does not compete with warm workers for the cores.
        """
        ray = import_ray()
        started = False
        if not ray.is_initialized():
            # "local": a new cluster for this run; ray.init() alone would join whatever cluster the last
            # ``ray start`` on this machine recorded in /tmp/ray, and wait forever if that one is gone
            ray.init(address=self.address or os.environ.get("RAY_ADDRESS") or "local", log_to_driver=False)
            started = True
        try:
            remote = ray.remote(type(self).task_fn)
            # largest first: the long tensors (embedding, head) start at once instead of ending the run alone
            queue = sorted(tasks, key=lambda t: (-t.nbytes, t.index))
            slots = max(1, int(ray.cluster_resources().get("CPU", 1)))
            pending: dict = {}
            out = []
            helping = self.driver_helps and not any(t.device.startswith("cuda") for t in queue)

            def submit() -> None:  # keep every CPU of the cluster busy, one task queued beyond
                while queue and len(pending) <= slots:
                    task = queue.pop(0)
                    opts = self.options(task)
                    pending[remote.options(**opts).remote(_for_device(task, opts), opts["num_cpus"])] = task

            def collect(timeout: float | None) -> bool:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=timeout)
                for ref in done:
                    task = pending.pop(ref)
                    result = ray.get(ref)
                    if progress:
                        progress(result.bytes_read, task.name)
                    out.append(result)
                    if on_result:
                        on_result(result)
                return bool(done)

            threads_before = _torch_threads_now()
            while queue or pending:
                submit()
                if helping and queue:
                    if collect(0):
                        helping = False  # a worker is up: leave the cores to the workers
                        continue
                    task = queue.pop()
                    out.append(_scan_here(task, self.options(task)["num_cpus"]))
                    if progress:
                        progress(out[-1].bytes_read, task.name)
                    if on_result:
                        on_result(out[-1])
                else:
                    collect(None)
            if threads_before:
                from ptlens.threads import apply

                apply(threads_before)  # the driver's own settings again, after helping with the workers' count
            return out
        finally:
            if started:
                ray.shutdown()


def _torch_threads_now() -> int | None:
    import sys

    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


def _for_device(task, opts: dict):
    """A CUDA task runs on the GPU Ray gives it, which the worker sees as its first device."""
    if "num_gpus" in opts:
        from dataclasses import replace

        return replace(task, device="cuda:0")
    return task


EXECUTORS: dict[str, type] = {"local": LocalExecutor, "ray": RayExecutor}


def get_executor(name: str):
    """An executor by its registry name; ``ray`` is checked to be importable now, before any work."""
    cls = EXECUTORS.get(name)
    if cls is None:
        raise PtlensError(f"--executor must be one of {', '.join(EXECUTORS)}, not {name!r}")
    if name == "ray":
        import_ray()
    return cls()

