"""The memory plan before a behaviour run: sizes from safetensors headers, placement, and the one-line refusal."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from typer.testing import CliRunner

from ptlens.behavior.memory import Device, human, model_memory, plan_memory, safetensors_sizes
from ptlens.hostmem import parse_bytes
from ptlens.errors import PtlensError
from ptlens.resolve.tiny import SHIPPED

torch.set_num_threads(1)


def _checkpoint(folder, tensors: dict[str, tuple[str, int]]):
    """A folder whose safetensors file holds only a header (sizes are read from it, never the data)."""
    folder.mkdir(parents=True)
    header, off = {}, 0
    for name, (dtype, n) in tensors.items():
        header[name] = {"dtype": dtype, "shape": [n], "data_offsets": [off, off + n]}
        off += n
    raw = json.dumps(header).encode()
    (folder / "model.safetensors").write_bytes(struct.pack("<Q", len(raw)) + raw + bytes(off))
    (folder / "config.json").write_text("{}")
    return folder


def test_sizes_come_from_the_headers_and_convert_to_the_run_dtype(tmp_path):
    f = _checkpoint(tmp_path / "m", {"w": ("BF16", 2000), "b": ("F32", 400), "q": ("U8", 100)})
    assert safetensors_sizes(f) == {"BF16": 2000, "F32": 400, "U8": 100}
    m = model_memory("m", f, "float32")
    assert (m.stored_bytes, m.run_bytes) == (2500, 4000 + 400 + 100)
    assert model_memory("m", f, "bfloat16").run_bytes == 2000 + 200 + 100
    assert model_memory("m", f, None).run_bytes == 2500
    shipped = model_memory("sft", SHIPPED / "sft", None)
    assert 0 < shipped.stored_bytes <= (SHIPPED / "sft" / "model.safetensors").stat().st_size
    assert parse_bytes("1.5GB") == 1_500_000_000 and parse_bytes("2GiB") == 2 ** 31 and parse_bytes("512") == 512
    with pytest.raises(PtlensError, match="PTLENS_MEMORY_BUDGET: expected bytes"):
        parse_bytes("lots")
    assert human(1_500_000_000) == "1.5 GB"


def test_placement_shards_transformers_over_gpus_and_vllm_by_rank(tmp_path):
    f = _checkpoint(tmp_path / "big", {"w": ("BF16", 3_000_000)})
    gpus = [Device("cuda:0", 2_000_000), Device("cuda:1", 2_000_000)]
    plan = plan_memory([("big", f)], "hf", "cuda", "auto", devices=gpus)  # 3.6 MB with headroom over two
    assert plan.problem is None and plan.models[0].placement == {"cuda:0": 1_800_000, "cuda:1": 1_800_000}
    one = plan_memory([("big", f)], "hf", "cuda:0", "auto", devices=gpus[:1])
    assert one.problem.startswith("memory plan: model big needs 3.6 MB (3 MB of bfloat16 weights + 20%) on cuda:0")
    v1 = plan_memory([("big", f)], "vllm", "cuda", "auto", {"gpu_memory_utilization": 0.9}, devices=gpus)
    assert "needs 3 MB of weights per rank (1 rank)" in v1.problem
    v2 = plan_memory([("big", f)], "vllm", "cuda", "auto", {"tensor_parallel_size": 2}, devices=gpus)
    assert v2.problem is None and v2.models[0].placement == {"cuda:0": 1_500_000, "cuda:1": 1_500_000}
    v4 = plan_memory([("big", f)], "vllm", "cuda", "auto", {"tensor_parallel_size": 4}, devices=gpus)
    assert v4.problem == "memory plan: tensor_parallel_size × pipeline_parallel_size 4 > 2 devices"


def test_a_plan_that_cannot_fit_stops_before_sampling(tmp_path, monkeypatch):
    """``ptlens behavior`` with a fake small budget: one line naming the model, exit 2, nothing sampled."""
    from ptlens.cli import app

    monkeypatch.setenv("PTLENS_MEMORY_BUDGET", "100KB")
    out = tmp_path / "res"
    args = ["behavior", "--models", f"sft={SHIPPED / 'sft'}", f"rlvr={SHIPPED / 'rlvr'}", "--problems", "builtin:1",
            "--limit", "2", "--n-samples", "1", "--device", "cpu", "--engine", "hf", "--output-dir", str(out)]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "memory plan: model sft needs" in lines[0] and "PTLENS_MEMORY_BUDGET" in lines[0], res.output
    assert not (out / "behavior" / "samples.jsonl").exists()
    monkeypatch.setenv("PTLENS_MEMORY_BUDGET", "1GB")  # the same run with room: sampled, and the plan recorded
    res = CliRunner().invoke(app, args + ["--max-new-tokens", "8"])
    assert res.exit_code == 0, res.output
    plan = json.loads((out / "behavior" / "memory_plan.json").read_text())
    assert plan["budget_from"] == "PTLENS_MEMORY_BUDGET" and plan["devices"] == [{"name": "cpu", "bytes": 10 ** 9}]
    assert [m["name"] for m in plan["models"]] == ["sft", "rlvr"] and plan["problem"] is None
    assert plan["models"][0]["run_bytes"] == 2 * plan["models"][0]["stored_bytes"]  # bf16 stored, float32 on CPU
