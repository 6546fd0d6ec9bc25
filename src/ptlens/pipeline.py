"""The library pipeline: weights → behaviour → mechanism → report, as functions with config dataclasses.

``ptlens run`` and the other commands are thin skins over these; from Python::

    import ptlens
    res = ptlens.run(output_dir="out", limit=12, n_samples=4)          # the embedded tiny lineage
    res = ptlens.run(["base=meta-llama/Llama-3.1-8B", "sft=allenai/Llama-3.1-Tulu-3-8B-SFT"], spectral="off")
    res.report["verdicts"], res.weights["aggregates"]["model"]

Each step stores its results (names in :mod:`ptlens.results.files`); :func:`run` reuses a stored
weight scan made from the same checkpoint files with the same settings (:mod:`ptlens.results.reuse`), skips behaviour (and mechanism)
when a checkpoint has no tokenizer, and ends with the report. What the pipeline tells as it goes
goes to a :class:`Reporter`: silent by default, the CLI's prints tables and progress.

The step functions are ``run_weights``, ``run_behavior``, ``run_mechanism`` and ``run_report``
(not ``ptlens.weights`` …: those names are the subpackages).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ContextManager, Mapping, Optional, Sequence, Union

from ptlens.behavior.config import N_SAMPLES, BehaviorConfig
from ptlens.behavior.sampling import MAX_NEW_TOKENS
from ptlens.config_fields import check_fields, like, setting
from ptlens.errors import PtlensError
from ptlens.results import files as F

if TYPE_CHECKING:  # heavy modules (torch) load only when a step runs
    from ptlens.behavior.run import BehaviorResult
    from ptlens.mechanism.config import MechanismConfig
    from ptlens.mechanism.run import MechanismResult
    from ptlens.resolve import Lineage
    from ptlens.weights import ScanConfig

Models = Union["Lineage", Sequence[str], Mapping[str, str], None]


# ---------------------------------------------------------------- what the pipeline tells its caller


class Reporter:
    """Hooks the pipeline calls as it goes; every one does nothing here. The CLI subclasses it to print."""

    behavior_progress: bool = False
    """Show the behaviour step's progress bars (rich, on stderr)."""

    def message(self, text: str) -> None:
        """A one-line note: a reused step, what is being written."""

    def warning(self, text: str) -> None:
        """A one-line warning: a skipped step."""

    def weights_progress(self, description: str) -> tuple[ContextManager, Optional[Callable[[int, int, str], None]]]:
        """A context manager around the scan and its progress callback (bytes done, bytes total, tensor)."""
        return contextlib.nullcontext(), None

    def weights_done(self, summary: dict, output_dir: Path, missing: dict) -> None:
        """The weight step's summary (stored or just written)."""

    def behavior_done(self, result: "BehaviorResult") -> None:
        """The behaviour step finished; ``result.results`` is model_comparison_results.json."""

    def mechanism_status(self) -> ContextManager[Callable[[str], None]]:
        """A context manager giving a callable that receives the mechanism step's progress lines."""
        return contextlib.nullcontext(lambda _m: None)

    def mechanism_done(self, result: "MechanismResult", output_dir: Path) -> None:
        """The mechanism step finished (or was reused: ``result.reused``)."""

    def report_done(self, result: dict) -> None:
        """The report is written; ``result`` is :func:`ptlens.report.build.build_report`'s return value."""


# ---------------------------------------------------------------- checks before any work


def check_output_dir(path: Path, what: str = "--output-dir") -> None:
    """Fail in one line, before any work, when ``path`` cannot hold results; creates nothing.

    Checked by creating (and removing) a probe directory in the nearest existing ancestor, since
    permission bits say nothing for root and nothing about read-only or virtual filesystems (/proc).
    ``what`` names the argument in the message.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PtlensError(f"{what} {path}: exists and is not a folder")
    probe_in = path.absolute()
    while not probe_in.exists():
        probe_in = probe_in.parent
    if not probe_in.is_dir():
        raise PtlensError(f"{what} {path}: cannot create it, {probe_in} is a file")
    try:
        os.rmdir(tempfile.mkdtemp(prefix=".ptlens-probe-", dir=probe_in))
    except OSError as e:
        raise PtlensError(f"{what} {path}: not writable ({e.strerror or e} in {probe_in})") from None


def preflight(*configs: Any, output_dir: Optional[str | Path] = None, what: str = "--output-dir") -> None:
    """Every check a command can make before any work, with no checkpoint read: one line for the first bad option.

    Every command calls it first. Per config (a :class:`RunConfig` stands for its steps' configs and itself, and
    gives ``output_dir``): its ``validate()`` (each field's check from :mod:`ptlens.config_fields`, the checks
    across fields, what an option needs here: CUDA, Ray), the behaviour engine (a named one that cannot run
    here) and the problems (a missing file, a hub set without ``datasets``); then ``output_dir``
    (:func:`check_output_dir`, named ``what`` in its message).
    """
    loaded: set[str] = set()
    for cfg in _configs(configs):
        cfg.validate()
        if isinstance(cfg, BehaviorConfig):
            from ptlens.behavior.engines import pick_engine

            pick_engine(cfg.engine, cfg.device)
        problems = getattr(cfg, "problems", None)  # the configs that take problems take a limit and a seed too
        if problems is not None and problems not in loaded:
            from ptlens.behavior.problems import load_problems

            load_problems(problems, cfg.limit, cfg.seed)
            loaded.add(problems)
        if output_dir is None and isinstance(cfg, RunConfig):
            output_dir = cfg.output_dir
    if output_dir is not None:
        check_output_dir(Path(output_dir), what)


def _configs(configs: Sequence[Any]) -> list[Any]:
    """The configs to check, a :class:`RunConfig`'s steps (those it runs) before itself."""
    out = []
    for cfg in configs:
        if isinstance(cfg, RunConfig):
            out += [c for c in (cfg.scan, cfg.behavior, cfg.mechanism) if c is not None]
        out.append(cfg)
    return out


def check_lineage_tensors(lineage, layer_pattern: Optional[str], allow_missing: bool,
                          allow_pickle: bool = False) -> dict[str, list[str]]:
    """Tensors absent from some checkpoints, from the safetensors headers alone (cheap, before the scan).

    A tensor missing from a checkpoint almost always means checkpoints of different models (a 2-layer
    and a 4-layer one): an error naming the checkpoint and a few tensors, unless ``allow_missing``.
    """
    from ptlens.weights.index import CheckpointIndex
    from ptlens.weights.plan import plan_tensors

    indexes = [CheckpointIndex.from_dir(c.path, allow_pickle=allow_pickle) for c in lineage.checkpoints]
    _, missing, _ = plan_tensors(indexes, lineage.names, layer_pattern)
    if missing and not allow_missing:
        by_cp: dict[str, list[str]] = {}
        for name, where in missing.items():
            for cp in where:
                by_cp.setdefault(cp, []).append(name)
        cp, names = max(by_cp.items(), key=lambda kv: len(kv[1]))
        shown = ", ".join(names[:3]) + (f" … ({len(names)} in all)" if len(names) > 3 else "")
        others = f"; {len(by_cp) - 1} other checkpoint(s) also lack tensors" if len(by_cp) > 1 else ""
        raise PtlensError(f"checkpoint {cp} lacks {len(names)} tensor(s) the others have: {shown}{others} — "
                          "not the same architecture? (--allow-missing compares only the tensors present)")
    return missing


def architecture_warning(lineage, allow_pickle: bool = False) -> Optional[str]:
    """A line when the lineage is not a transformer ptlens understands (Mamba): attention/MLP questions do not apply."""
    from ptlens.weights.index import CheckpointIndex
    from ptlens.weights.names import architecture_note

    cp = lineage.checkpoints[0]
    return architecture_note(CheckpointIndex.from_dir(cp.path, allow_pickle=allow_pickle).tensors) if cp.path else None


def has_tokenizer(path: Optional[Path]) -> bool:
    """Whether a checkpoint folder can be prompted (behaviour and mechanism need a tokenizer)."""
    return path is not None and any((Path(path) / f).is_file() for f in ("tokenizer.json", "tokenizer.model", "vocab.json"))


def lineage_of(models: Models = None, preset: Optional[str] = None, allow_pickle: bool = False) -> "Lineage":
    """A resolved lineage from a :class:`Lineage`, ``["label=SPEC", …]``, ``{label: spec}`` or a preset
    (neither: the embedded tiny lineage)."""
    from ptlens.resolve import Lineage, resolve_lineage

    if isinstance(models, Lineage):
        return models
    if isinstance(models, Mapping):
        models = [f"{k}={v}" for k, v in models.items()]
    return resolve_lineage(models=list(models) if models else None, preset=preset, allow_pickle=allow_pickle)


# ---------------------------------------------------------------- weights


@dataclass
class WeightsResult:
    summary: dict
    """weights/summary.json (:class:`ptlens.results.WeightSummary` as a dict)."""
    reused: bool
    missing: dict[str, list[str]] = field(default_factory=dict)
    """Tensors absent from some checkpoints (compared only where present; only with allow_missing)."""


def stored_weights(lineage, cfg: "ScanConfig", output_dir: Path) -> Optional[dict]:
    """The stored weight summary, if it was made from these checkpoint files with these settings.

    Other settings or another lineage: None (scanned again). The same checkpoints with files changed since
    (retrained in place): one line naming them (:meth:`ptlens.results.reuse.Comparison.refuse_changed`).
    """
    from ptlens.results.reuse import compare
    from ptlens.results.store import parse_weight_summary, read_document
    from ptlens.weights.driver import scan_fingerprint

    path = Path(output_dir) / F.WEIGHT_SUMMARY
    if not path.is_file():
        return None
    try:
        s, data = read_document(path, "weights")
        parse_weight_summary(s, data, path)
    except PtlensError:
        return None  # a newer or broken file is scanned again, not reused
    cmp = compare(s.get("fingerprint"), scan_fingerprint(lineage, cfg))
    cmp.refuse_changed(path)
    return s if cmp.same else None


def check_stored_inputs(lineage, output_dir: Path, overwrite: bool = False) -> None:
    """Before any work: stop with one line when a result stored in ``output_dir`` (weight summary, behaviour
    journal settings, mechanism summary or a finished transition) was made from checkpoint files that changed
    since, so that a retrained checkpoint is neither reused nor found out only after hours of scanning."""
    from ptlens.results.reuse import INPUTS, check_stored, inputs_of

    out = Path(output_dir)
    if overwrite or not out.is_dir():
        return
    weights, model = {INPUTS: inputs_of(lineage, "weights")}, {INPUTS: inputs_of(lineage, "model")}
    stored = [(out / F.WEIGHT_SUMMARY, "fingerprint", weights), (out / F.BEHAVIOR_SETTINGS, "", model),
              (out / F.MECHANISM_SUMMARY, "fingerprint", model)]
    stored += [(p, "fingerprint", model) for p in sorted((out / F.MECHANISM_TRANSITIONS_DIR).glob("*.json"))]
    check_stored(stored, overwrite)


def start_weight_figure_pool():
    """Workers for the weight figures (:mod:`ptlens.figpool`), or None where they would not help: start it before
    importing torch or numba, so that the workers' matplotlib import overlaps the caller's imports and scan."""
    from ptlens.figpool import start

    return start(len(F.WEIGHT_FIGURES) + 1, ["ptlens.weights.figures"])  # + the overview


def run_weights(lineage, config: Optional["ScanConfig"] = None, output_dir: str | Path = "analysis_results", *,
                figures: bool = True, allow_missing: bool = False, reuse: bool = False, overwrite: bool = False,
                reporter: Optional[Reporter] = None, executor: Any = "local", figure_pool: Any = None) -> WeightsResult:
    """Scan every tensor of the lineage once; write tensors.csv, summary.json, figures, weight_analysis_report.md.

    ``reuse``: return the stored summary instead when it was made from these checkpoint files with these settings.
    Finished tensors are journalled (``weights/scan.jsonl``, removed once the outputs are written): a rerun after a
    kill scans only the others. ``overwrite``: start the journal over even when its checkpoint files changed.
    ``executor``: where the per-tensor tasks run (a name in ``ptlens.weights.executors.EXECUTORS`` or an executor).
    ``figure_pool``: a :class:`ptlens.figpool.FigurePool` the caller started early and closes; else one is started
    here, before the scan, and closed after the figures.
    """
    from ptlens.results.journal import remove_lock
    from ptlens.weights import ScanConfig, scan_lineage, write_outputs

    rep = reporter or Reporter()
    cfg = config or ScanConfig()
    cfg.validate()
    out = Path(output_dir)
    lineage = lineage_of(lineage, allow_pickle=cfg.allow_pickle)
    missing = check_lineage_tensors(lineage, cfg.layer_pattern, allow_missing, cfg.allow_pickle)
    note = architecture_warning(lineage, cfg.allow_pickle)
    if note:
        rep.warning(f"weights: {note}")
    summary = stored_weights(lineage, cfg, out) if reuse and not overwrite else None
    if summary is not None:
        rep.message(f"weights: reusing {out}/{F.WEIGHT_SUMMARY} (same checkpoint files and settings)")
        return WeightsResult(summary, True, missing)
    journal = out / F.WEIGHT_JOURNAL
    own = figure_pool is None and figures
    pool = start_weight_figure_pool() if own else figure_pool  # started now, their imports overlap the scan
    try:
        prog, update = rep.weights_progress("weights")
        with prog:
            result = scan_lineage(lineage, cfg, progress=update, executor=executor, journal=journal,
                                  overwrite=overwrite, note=rep.message)
        rep.message(f"writing tables, figures and {F.WEIGHT_REPORT_MD} …")
        summary = write_outputs(result, out, figures=figures, pool=pool)
        journal.unlink(missing_ok=True)  # every tensor is in tensors.csv now
        remove_lock(journal)
        return WeightsResult(summary, False, missing)
    finally:
        if own and pool is not None:
            pool.close()


# ---------------------------------------------------------------- behaviour, mechanism, report


def run_behavior(lineage, config: Optional["BehaviorConfig"] = None, output_dir: str | Path = "analysis_results", *,
                 reporter: Optional[Reporter] = None) -> "BehaviorResult":
    """Every model answers the same problems: samples, grades, scores, metrics, figures (resumable)."""
    from ptlens.behavior.config import BehaviorConfig
    from ptlens.behavior.run import run_behavior as drive

    rep = reporter or Reporter()
    cfg = config or BehaviorConfig()
    result = drive(lineage_of(lineage, allow_pickle=cfg.allow_pickle), cfg, output_dir,
                   progress=rep.behavior_progress)
    rep.behavior_done(result)
    return result


def run_mechanism(lineage, config: Optional["MechanismConfig"] = None, output_dir: str | Path = "analysis_results", *,
                  reporter: Optional[Reporter] = None) -> "MechanismResult":
    """Activation diffs and delta transplants per transition (reused when stored with the same settings)."""
    from ptlens.mechanism.config import MechanismConfig
    from ptlens.mechanism.run import run_mechanism as drive

    rep = reporter or Reporter()
    cfg = config or MechanismConfig()
    with rep.mechanism_status() as update:
        result = drive(lineage_of(lineage, allow_pickle=cfg.allow_pickle), cfg, output_dir, progress=update)
    if result.reused:
        rep.message(f"mechanism: reusing {output_dir}/{F.MECHANISM_SUMMARY} (same checkpoint files and settings)")
    rep.mechanism_done(result, Path(output_dir))
    return result


def run_report(output_dir: str | Path = "analysis_results", *, reporter: Optional[Reporter] = None,
               **kwargs: Any) -> dict:
    """report.html, report.md and report/verdicts.json from the stored results alone (``build_report``)."""
    from ptlens.report.build import build_report

    result = build_report(output_dir, **kwargs)
    (reporter or Reporter()).report_done(result)
    return result


# ---------------------------------------------------------------- the whole run


def _scan_config():
    from ptlens.weights import ScanConfig

    return ScanConfig()


def _behavior_config():
    return BehaviorConfig()


def _mechanism_config():
    from ptlens.mechanism.config import MechanismConfig

    return MechanismConfig()


@dataclass
class RunConfig:
    """Everything ``ptlens run`` needs besides the lineage: one config per step, and what spans steps."""

    output_dir: Path = setting(Path("analysis_results"), flag="--output-dir",
                               help="Where results go (--output_dir works too).")
    scan: "ScanConfig" = field(default_factory=_scan_config)
    behavior: "BehaviorConfig" = field(default_factory=_behavior_config)
    mechanism: Optional["MechanismConfig"] = field(default_factory=_mechanism_config)
    """None: no mechanism step."""
    allow_missing: bool = setting(False, flag="--allow-missing", help=(
        "Compare only the tensors present when a checkpoint lacks some (default: an error, as it usually means "
        "different architectures)."))
    overwrite: bool = like(BehaviorConfig, "overwrite")
    """Recompute every step instead of reusing stored results (the weight scan is reused only without it)."""
    figures: bool = setting(True, flag="--figures/--no-figures", help="Draw the figures.")
    executor: Any = setting("local", flag="--executor", help=(  # "\\[": a literal [ in rich's --help
        "Where the weight scan's per-tensor tasks run: local (this process) or ray (Ray tasks on the cluster of "
        "RAY_ADDRESS, else a local one; needs pip install 'ptlens\\[ray]')."))
    """Where the weight scan's tasks run: ``local`` or ``ray`` (or an executor object)."""

    @classmethod
    def from_options(cls, output_dir: str | Path = "analysis_results", *, device: str = "auto", spectral: str = "topk",
                     problems: str = "builtin", limit: Optional[int] = None, n_samples: int = N_SAMPLES,
                     max_new_tokens: int = MAX_NEW_TOKENS, engine: str = "auto", overwrite: bool = False,
                     allow_pickle: bool = False, allow_missing: bool = False, mechanism: bool = True,
                     figures: bool = True, executor: Any = "local") -> "RunConfig":
        """The configs ``ptlens run``'s flags make (same names, same defaults)."""
        from ptlens.mechanism.config import MechanismConfig
        from ptlens.weights import ScanConfig

        return cls(
            output_dir=Path(output_dir),
            scan=ScanConfig(spectral=spectral, device=device, allow_pickle=allow_pickle),
            behavior=BehaviorConfig(problems=problems, limit=limit, n_samples=n_samples, max_new_tokens=max_new_tokens,
                                    engine=engine, device=device, overwrite=overwrite, allow_pickle=allow_pickle,
                                    figures=figures),
            mechanism=MechanismConfig(problems=problems, limit=min(limit or 32, 32), max_new_tokens=max_new_tokens,
                                      device=device, allow_pickle=allow_pickle, overwrite=overwrite, figures=figures)
            if mechanism else None,
            allow_missing=allow_missing, overwrite=overwrite, figures=figures, executor=executor)

    def validate(self) -> None:
        """Its own fields' checks, and the executor by name made into one (an unknown name or a missing Ray: one
        line, before any work); the steps' configs are :func:`preflight`'s."""
        check_fields(self)
        if isinstance(self.executor, str):
            from ptlens.weights.executors import get_executor

            self.executor = get_executor(self.executor)


@dataclass
class RunResult:
    output_dir: Path
    lineage: "Lineage"
    weights: WeightsResult
    behavior: Optional["BehaviorResult"] = None
    """None when skipped (``behavior_skipped`` names the checkpoints without a tokenizer)."""
    behavior_skipped: list[str] = field(default_factory=list)
    mechanism: Optional["MechanismResult"] = None
    report: dict = field(default_factory=dict)


def run(models: Models = None, *, preset: Optional[str] = None, config: Optional[RunConfig] = None,
        reporter: Optional[Reporter] = None, **options: Any) -> RunResult:
    """The main job: weights, behaviour, mechanism and report for a lineage (default: the embedded tiny lineage).

    ``options`` are :meth:`RunConfig.from_options`'s (``output_dir``, ``limit``, ``n_samples``, ``spectral`` …),
    used when no ``config`` is given. Rerunning reuses the stored weight scan and mechanism results made with the
    same settings and resumes an interrupted behaviour run.
    """
    if config is not None and options:
        raise PtlensError(f"give either config or options ({', '.join(options)}), not both")
    cfg = config or RunConfig.from_options(**options)
    rep = reporter or Reporter()
    preflight(cfg)
    lineage = lineage_of(models, preset, cfg.scan.allow_pickle)
    out = cfg.output_dir
    check_stored_inputs(lineage, out, cfg.overwrite)
    w = run_weights(lineage, cfg.scan, out, figures=cfg.figures, allow_missing=cfg.allow_missing,
                    reuse=not cfg.overwrite, overwrite=cfg.overwrite, reporter=rep, executor=cfg.executor)
    rep.weights_done(w.summary, out, w.missing)
    res = RunResult(out, lineage, w)
    res.behavior_skipped = [c.name for c in lineage.checkpoints if not has_tokenizer(c.path)]
    if res.behavior_skipped:
        rep.warning(f"behaviour skipped: no tokenizer in {', '.join(res.behavior_skipped)} (weights-only lineage)")
    else:
        res.behavior = run_behavior(lineage, cfg.behavior, out, reporter=rep)
        if cfg.mechanism is not None and architecture_warning(lineage, cfg.scan.allow_pickle):
            rep.warning("mechanism skipped: attention/MLP activations and transplants do not apply to this architecture")
        elif cfg.mechanism is not None:
            res.mechanism = run_mechanism(lineage, cfg.mechanism, out, reporter=rep)
    res.report = run_report(out, reporter=rep)
    return res
