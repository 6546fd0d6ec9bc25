"""The memory plan of a behaviour run, made before any sampling: each model's bytes, the devices, what goes where.

Sizes come from the safetensors headers (no tensor is read), converted to the dtype the run loads them in.
One model is resident at a time (sampling, then scoring: on the engine, or on transformers with the
sampler's nuclei kept), so the run fits when its largest model fits where it goes:

- ``hf``: transformers on one device, or sharded over every visible GPU (``device_map="auto"``);
- ``vllm`` / ``ray-vllm``: vLLM's share of a device (``gpu_memory_utilization``) per tensor-parallel rank.

A plan that cannot fit stops the run with one line (exit 2). ``PTLENS_MEMORY_BUDGET`` (bytes, or with a unit:
``500MB``, ``80GiB``) replaces each device's memory, to plan for another machine or to test the refusal.
"""

from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

from ptlens.errors import PtlensError
from ptlens.hostmem import BUDGET_ENV, memory_budget

HEADROOM = 0.2
"""Share added to a transformers model's weights for activations, logits and the allocator (scoring batches are
bounded by ``score_token_budget``)."""
DTYPE_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I64": 8, "I32": 4, "I16": 2,
               "I8": 1, "U8": 1, "BOOL": 1}
TORCH_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2}

@dataclass(frozen=True)
class Device:
    name: str
    bytes: int


@dataclass(frozen=True)
class ModelMemory:
    name: str
    stored_bytes: int
    """Bytes of the weights as stored (safetensors headers; file sizes for pickle checkpoints)."""
    run_bytes: int
    """Bytes once loaded in the run's dtype (floating tensors converted; integer/quantised ones as stored)."""
    placement: dict[str, int] = field(default_factory=dict)
    """device → bytes this model puts there (weights, plus headroom for transformers)."""


@dataclass(frozen=True)
class MemoryPlan:
    engine: str
    devices: list[Device]
    models: list[ModelMemory]
    budget_from: str
    """Where the device sizes came from: the devices themselves, or ``PTLENS_MEMORY_BUDGET``."""
    problem: str | None
    """Why the plan cannot fit (one line), or None."""

    def to_dict(self) -> dict:
        return asdict(self)


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n} B"  # unreachable


def safetensors_sizes(path: Path) -> dict[str, int]:
    """Bytes per stored dtype of a checkpoint folder, from its safetensors headers only."""
    out: dict[str, int] = {}
    files = sorted(Path(path).glob("*.safetensors"))
    for f in files:
        with f.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise PtlensError(f"{f}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            try:
                header = json.loads(fh.read(n))
            except ValueError:
                raise PtlensError(f"{f}: unreadable safetensors header") from None
        for name, t in header.items():
            if name != "__metadata__":
                out[t["dtype"]] = out.get(t["dtype"], 0) + int(t["data_offsets"][1]) - int(t["data_offsets"][0])
    if not files:  # pickle checkpoints (--allow-pickle): their file sizes, dtype unknown
        out["?"] = sum(f.stat().st_size for f in Path(path).glob("*.bin"))
    return out


def model_memory(name: str, path: Path, run_dtype: str | None) -> ModelMemory:
    """``run_dtype``: the torch dtype floating tensors are loaded in (None: as stored)."""
    sizes = safetensors_sizes(path)
    stored = sum(sizes.values())
    run = 0
    for dt, b in sizes.items():
        width = DTYPE_BYTES.get(dt)
        if run_dtype and dt in ("F64", "F32", "BF16", "F16") and width:
            run += b * TORCH_BYTES[run_dtype] // width
        else:
            run += b
    return ModelMemory(name, stored, run)


def visible_devices(device: str) -> list[Device]:
    """The devices a run on ``device`` uses, with their memory: every visible GPU for ``cuda`` (transformers
    shards over them), the one named for ``cuda:N``, else the host's available memory."""
    if device.startswith("cuda"):
        import torch

        ids = [int(device.split(":")[1])] if ":" in device else range(torch.cuda.device_count())
        return [Device(f"cuda:{i}", int(torch.cuda.get_device_properties(i).total_memory)) for i in ids]
    from ptlens.hostmem import host_available

    avail = host_available()[0]
    return [Device("cpu", int(avail))]


def run_dtype(engine: str, device: str, dtype: str) -> str | None:
    """The dtype floating weights are loaded in: as HFModel and vLLM choose it for ``--dtype auto``."""
    if dtype != "auto":
        return dtype
    if engine == "hf":
        return "bfloat16" if device.startswith("cuda") else "float32"
    return "bfloat16" if device == "cpu" else None  # vLLM: the checkpoint's own dtype on GPU, bf16 on its CPU backend


def plan_memory(models: Sequence[tuple[str, Path]], engine: str, device: str, dtype: str = "auto",
                engine_kwargs: dict | None = None, devices: Sequence[Device] | None = None) -> MemoryPlan:
    """Where each model goes, and whether the largest fits (one model resident at a time).

    ``device``: the resolved device ("cpu", "cuda", "cuda:1"). ``devices``: instead of the machine's (tests,
    planning for another machine); else ``PTLENS_MEMORY_BUDGET`` per device when set, else the devices'."""
    kw = engine_kwargs or {}
    budget = memory_budget()
    if devices is None:
        devices = visible_devices(device)
        source = "devices"
        if budget is not None:
            devices = [Device(d.name, budget) for d in devices]
            source = BUDGET_ENV
    else:
        source = "given"
    devices = list(devices)
    width = run_dtype(engine, device, dtype)
    out, problem = [], None
    for name, path in models:
        m = model_memory(name, Path(path), width)
        if engine == "hf":
            need = int(m.run_bytes * (1 + HEADROOM))
            usable = devices if device == "cpu" or len(devices) > 1 else devices[:1]
            total = sum(d.bytes for d in usable)
            placement = {d.name: need * d.bytes // max(total, 1) for d in usable}  # device_map="auto": by size
            where = " + ".join(d.name for d in usable)
            if need > total and problem is None:
                problem = (f"memory plan: model {name} needs {human(need)} ({human(m.run_bytes)} of {width or 'stored'} "
                           f"weights + {HEADROOM:.0%}) on {where}, which has {human(total)} ({source}); "
                           f"use a smaller --dtype, more devices, or --engine vllm with tensor parallelism")
        else:
            tp = int(kw.get("tensor_parallel_size", 1)) * int(kw.get("pipeline_parallel_size", 1))
            share = float(kw.get("gpu_memory_utilization", 0.9))
            ranks = devices[:tp] if len(devices) >= tp else devices
            placement = {d.name: m.run_bytes // tp for d in ranks}
            if device != "cpu" and len(devices) < tp and problem is None:
                problem = f"memory plan: tensor_parallel_size × pipeline_parallel_size {tp} > {len(devices)} devices"
            room = min(d.bytes for d in ranks) * (share if device != "cpu" else 1.0)
            if m.run_bytes / tp > room and problem is None:
                problem = (f"memory plan: model {name} needs {human(m.run_bytes / tp)} of weights per rank "
                           f"({tp} rank{'s' if tp > 1 else ''}), more than vLLM's {human(room)} of "
                           f"{ranks[0].name} ({source}); raise tensor_parallel_size or use a smaller dtype")
        out.append(ModelMemory(m.name, m.stored_bytes, m.run_bytes, placement))
    return MemoryPlan(engine, devices, out, source, problem)


def check_memory(plan: MemoryPlan) -> None:
    if plan.problem:
        raise PtlensError(plan.problem)
