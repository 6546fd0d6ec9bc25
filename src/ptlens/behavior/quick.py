"""``ptlens quick A B``: a first look at two models answering the same few problems, live.

Both models are held at once (the one command that must) and generate in two threads, so their
answers stream side by side; then each answer is graded and scored for a one-screen table.
Model text is escaped before display. Sampling runs concurrently, so unlike ``behavior`` a
rerun is not bit-for-bit identical.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

from ptlens.behavior.engines import (
    AUTO_INSTRUCTION,
    Generation,
    HFModel,
    SamplingSettings,
    build_prompt,
    derived_seed,
    check_weights,
    load_tokenizer,
    model_instruction,
    prompt_ids,
)
from ptlens.behavior.grading import grade
from ptlens.behavior.problems import Problem


@dataclass
class QuickConfig:
    problems: str = "builtin"
    limit: int = 3
    seed: int = 0
    temperature: float = 0.6
    top_p: float = 0.95
    max_new_tokens: int = 256
    device: str = "auto"
    dtype: str = "auto"
    instruction: str | None = AUTO_INSTRUCTION
    allow_pickle: bool = False


@dataclass
class QuickRow:
    """One model's answer to one problem."""

    model: str
    problem_id: str
    gold: str
    response: str
    extracted: str | None
    correct: bool
    tokens: int
    mean_logprob: float
    mean_entropy: float
    truncated: bool


class _Stream:
    """Collects streamed text for one model; read from the display thread."""

    def __init__(self) -> None:
        self.text = ""
        self.done = False
        self.error: BaseException | None = None
        self.generation: Generation | None = None


def _panels(names: Sequence[str], streams: Sequence[_Stream], problem: Problem, index: int, total: int):
    from rich.columns import Columns
    from rich.console import Group
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    header = Text.from_markup(f"[bold]problem {index + 1}/{total}[/] [dim]{escape(problem.id)}[/]  "
                              f"{escape(problem.question)}  [dim]gold:[/] {escape(problem.answer)}")
    panels = [Panel(Text(s.text or "…"), title=escape(n) + (" ✓" if s.done else " …"), expand=True)
              for n, s in zip(names, streams)]
    return Group(header, Columns(panels, equal=True, expand=True))


def quick_compare(lineage, problems: Sequence[Problem], config: QuickConfig, console: Any = None) -> list[QuickRow]:
    """Stream both models' answers to each problem side by side, then grade and score them."""
    from rich.live import Live
    from transformers import TextIteratorStreamer

    cps = lineage.checkpoints[:2]
    names = [c.name for c in cps]
    for c in cps:
        check_weights(c.path, c.name, config.allow_pickle)
    toks = [load_tokenizer(c.path, c.name) for c in cps]
    instructions = [model_instruction(c.path, config.instruction) for c in cps]
    settings = SamplingSettings(config.temperature, config.top_p, config.max_new_tokens)
    models = []
    rows: list[QuickRow] = []
    try:
        for c, t in zip(cps, toks):
            models.append(HFModel(c.path, t, config.device, config.dtype, allow_pickle=config.allow_pickle))
        for pi, problem in enumerate(problems):
            prompts = [build_prompt(t, problem.question, ins) for t, ins in zip(toks, instructions)]
            ids = [prompt_ids(t, pr) for t, pr in zip(toks, prompts)]
            streams = [_Stream() for _ in cps]
            threads = []
            for m, t, pr, pid, st, name in zip(models, toks, prompts, ids, streams, names):
                streamer = TextIteratorStreamer(t, skip_prompt=True, skip_special_tokens=True, timeout=600)
                th = threading.Thread(target=_generate, daemon=True,
                                      args=(m, pid, pr.stop, settings, derived_seed(config.seed, name, "quick", pi), streamer, st))
                reader = threading.Thread(target=_read, args=(streamer, st), daemon=True)
                th.start()
                reader.start()
                threads += [th, reader]
            with Live(_panels(names, streams, problem, pi, len(problems)), console=console, refresh_per_second=12,
                      transient=False) as live:
                while any(th.is_alive() for th in threads):
                    for th in threads:
                        th.join(0.05)
                    live.update(_panels(names, streams, problem, pi, len(problems)))
                for st in streams:
                    if st.generation is not None:
                        st.done = True
                        st.text = st.generation.text
                live.update(_panels(names, streams, problem, pi, len(problems)))
            for st in streams:
                if st.error is not None:
                    raise st.error
            for m, name, pid, st in zip(models, names, ids, streams):
                g = st.generation
                gr = grade(g.text, problem.answer)
                sc = m.score([(pid, g.token_ids)])[0]
                rows.append(QuickRow(model=name, problem_id=problem.id, gold=problem.answer, response=g.text,
                                     extracted=gr.extracted, correct=gr.correct, tokens=len(g.token_ids),
                                     mean_logprob=sc.logprob_sum / max(sc.tokens, 1),
                                     mean_entropy=sc.entropy_sum / max(sc.tokens, 1), truncated=g.finish == "length"))
    finally:
        for m in models:
            m.close()
    return rows


def _generate(model: HFModel, ids: list[int], stop, settings: SamplingSettings, seed: int, streamer, st: _Stream) -> None:
    try:
        st.generation = model.generate([ids], stop, settings, seed, streamer=streamer)[0]
    except BaseException as e:
        st.error = e
        streamer.end()


def _read(streamer, st: _Stream) -> None:
    try:
        for piece in streamer:
            st.text += piece
    except Exception as e:
        st.error = st.error or e


def summary_table(rows: Sequence[QuickRow]):
    """The one-screen table: per problem and model, whether it was right, its length, log-prob and entropy."""
    from rich.markup import escape
    from rich.table import Table

    t = Table(title="ptlens quick", title_justify="left")
    for col, just in (("problem", "left"), ("model", "left"), ("answer", "left"), ("gold", "left"),
                      ("correct", "center"), ("tokens", "right"), ("mean log-prob", "right"), ("entropy", "right")):
        t.add_column(col, justify=just)
    for r in rows:
        t.add_row(escape(r.problem_id), escape(r.model), escape(r.extracted or "—"), escape(r.gold),
                  "[green]yes[/]" if r.correct else "[red]no[/]",
                  f"{r.tokens}{'+' if r.truncated else ''}", f"{r.mean_logprob:.3f}", f"{r.mean_entropy:.3f}")
    names = list(dict.fromkeys(r.model for r in rows))
    for name in names:
        mine = [r for r in rows if r.model == name]
        t.add_row("[bold]all[/]", escape(name), "", "", f"{sum(r.correct for r in mine)}/{len(mine)}",
                  f"{sum(r.tokens for r in mine) / len(mine):.1f}",
                  f"{sum(r.mean_logprob for r in mine) / len(mine):.3f}",
                  f"{sum(r.mean_entropy for r in mine) / len(mine):.3f}", end_section=name == names[0])
    return t
