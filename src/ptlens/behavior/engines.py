"""The sampling-engine interface and registry, and the transformers engine.

Engines (:class:`Engine`: transformers here, vLLM and Ray Data LLM in ``engine_vllm.py``) turn
:class:`Request` records (prompt ids, one seed per sample) into :class:`Generation` records and
nothing else; the driver owns files, seeds and grading. Scoring runs through transformers
(:class:`~ptlens.behavior.hf_model.HFModel`: the full-vocabulary distribution at every response token, so exact
entropies and KL), or through an engine that scores (``Engine.score``: vLLM's log-probs of the response tokens
and their top-K candidates, so cross_ppl and the Monte-Carlo KL,
:func:`~ptlens.behavior.nucleus.sampled_token_scores`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Sequence

from ptlens.behavior.hf_model import HFModel
from ptlens.behavior.nucleus import KL_SMOOTHING, SampledScores
from ptlens.behavior.sampling import Generation, SamplingSettings
from ptlens.errors import PtlensError


@dataclass(frozen=True)
class Request:
    """What an engine samples for one prompt: one response per seed, each drawn with its own seed.

    The driver derives every seed from (run seed, model, problem, sample index), so a sample is the
    same whichever engine, batch or worker produced it (within one engine: engines sample differently).
    """

    prompt_ids: tuple[int, ...]
    seeds: tuple[int, ...]
    stop: tuple[str, ...]
    settings: SamplingSettings



@dataclass(frozen=True)
class EngineOptions:
    """Settings every engine receives; each uses what applies to it (``extra``: engine-specific keywords)."""

    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    extra: dict = field(default_factory=dict)



class Engine(ABC):
    """A sampling backend for one model: prompt ids and seeds in, :class:`Generation` records out.

    Engines neither grade nor write files: the driver (``run.py``) plans, journals and grades.
    Adding a backend is one subclass registered in :data:`ENGINES`.
    """

    name: ClassVar[str] = ""

    def __init__(self, path: Path, tokenizer: Any, options: EngineOptions):
        self.path, self.tokenizer, self.options = Path(path), tokenizer, options

    @classmethod
    def unavailable(cls) -> str | None:
        """Why this engine cannot run here (a one-line reason), or None when it can."""
        return None

    @classmethod
    def preferred(cls, device: str) -> bool:
        """Whether ``--engine auto`` picks this engine on ``device`` (checked in registry order, after hf)."""
        return False

    @abstractmethod
    def generate(self, requests: Sequence[Request]) -> list[list[Generation]]:
        """One list per request, one :class:`Generation` per seed, in the requests' order."""

    scores: ClassVar[bool] = False
    """Whether :meth:`score` runs on this engine; the driver then scores with it (Monte-Carlo KL) and loads no
    transformers model for scoring. Else scoring runs on transformers (:class:`HFModel`, exact KL)."""

    def score(self, pairs: Sequence[tuple[list[int], list[int]]], settings: SamplingSettings,
              smoothing: float = KL_SMOOTHING) -> list[SampledScores]:
        """Each (prompt ids, response ids) pair scored teacher-forced from the engine's log-probabilities of the
        response tokens (:class:`SampledScores`, sampling distribution per ``settings``), in the pairs' order."""
        raise NotImplementedError(f"engine {self.name!r} does not score")

    def scorer(self) -> "HFModel | None":
        """The loaded transformers model when the engine has one (the driver scores with it instead of loading
        the checkpoint again)."""
        return None

    def close(self) -> None:
        """Free the model (and any worker process)."""

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



class HFEngine(Engine):
    """transformers ``generate`` in-process, with one generator per sample (:class:`RowSampler`)."""

    name = "hf"

    def __init__(self, path: Path, tokenizer: Any, options: EngineOptions):
        super().__init__(path, tokenizer, options)
        self.model = HFModel(path, tokenizer, options.device, options.dtype, allow_pickle=options.allow_pickle)

    def generate(self, requests: Sequence[Request]) -> list[list[Generation]]:
        out: list[list[Generation]] = [[] for _ in requests]
        groups: dict[tuple, list[int]] = {}  # one generate call per stop/settings combination
        for i, r in enumerate(requests):
            groups.setdefault((r.stop, r.settings), []).append(i)
        for (stop, settings), idx in groups.items():
            rows = [list(requests[i].prompt_ids) for i in idx for _ in requests[i].seeds]
            seeds = [s for i in idx for s in requests[i].seeds]
            gens = iter(self.model.generate(rows, stop, settings, seeds))
            for i in idx:
                out[i] = [next(gens) for _ in requests[i].seeds]
        return out

    def scorer(self) -> "HFModel":
        return self.model

    def close(self) -> None:
        if getattr(self, "model", None) is not None:
            self.model.close()
            self.model = None



ENGINES: dict[str, str] = {
    "hf": "ptlens.behavior.engines:HFEngine",
    "vllm": "ptlens.behavior.engine_vllm:VllmEngine",
    "ray-vllm": "ptlens.behavior.engine_vllm:RayVllmEngine",
}
"""The engine registry: ``--engine`` name → "module:Class" (imported only when used, so that listing
engines never imports vLLM or Ray)."""



def engine_names() -> list[str]:
    """What ``--engine`` accepts: auto, then every registered engine."""
    return ["auto", *ENGINES]



def engine_class(name: str) -> type[Engine]:
    import importlib

    if name not in ENGINES:
        raise PtlensError(f"--engine must be one of {', '.join(engine_names())}, got {name!r}")
    module, _, cls = ENGINES[name].partition(":")
    return getattr(importlib.import_module(module), cls)



def pick_engine(engine: str, device: str) -> str:
    """The registered engine to use: ``auto`` is the first engine that prefers ``device`` and can run (vLLM on
    a GPU when its Python is found), else transformers; a named engine that cannot run is a one-line error."""
    if engine != "auto":
        reason = engine_class(engine).unavailable()
        if reason:
            raise PtlensError(f"--engine {engine}: {reason}")
        return engine
    for name in ENGINES:
        if name != "hf":
            cls = engine_class(name)
            if cls.preferred(device) and cls.unavailable() is None:
                return name
    return "hf"



def make_engine(name: str, path: Path, tokenizer: Any, options: EngineOptions) -> Engine:
    return engine_class(name)(path, tokenizer, options)
