"""``ptlens quick A B``: a first look at two models answering the same few problems, live.

Both models are held at once (the one command that must). They generate one after the other in
a background thread, streaming into side-by-side panels, each with its own seed: two models
sampling at once would share torch's global random state and a rerun would differ. So a rerun
with the same ``--seed`` gives the same answers. Each answer is graded as soon as it is complete
(the panel title then says ✓ correct or ✗ wrong), then scored for a one-screen table.
Model text is escaped before display.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Sequence

from ptlens.behavior.config import BehaviorConfig
from ptlens.behavior.hf_model import HFModel, check_weights
from ptlens.behavior.prompts import build_prompt, load_tokenizer, model_instruction, prompt_ids
from ptlens.behavior.sampling import Generation, SamplingSettings, derived_seed
from ptlens.behavior.grading import grade
from ptlens.behavior.problems import Problem
from ptlens.config_fields import at_least, check_fields, like


@dataclass
class QuickConfig:
    """What ``ptlens quick`` is asked to do: the options it shares with ``ptlens behavior`` are the same settings,
    with a smaller limit and token budget for a first look."""

    problems: str = like(BehaviorConfig, "problems")
    limit: int = like(BehaviorConfig, "limit", default=3, help="How many problems.")
    seed: int = like(BehaviorConfig, "seed")
    temperature: float = like(BehaviorConfig, "temperature")
    top_p: float = like(BehaviorConfig, "top_p")
    max_new_tokens: int = like(BehaviorConfig, "max_new_tokens", default=256, check=at_least(1))
    device: str = like(BehaviorConfig, "device")
    dtype: str = "auto"
    instruction: str | None = like(BehaviorConfig, "instruction")
    allow_pickle: bool = like(BehaviorConfig, "allow_pickle")

    def validate(self) -> None:
        """Every field's check (no option here depends on another)."""
        check_fields(self)


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
        self.started = False
        self.done = False
        self.correct: bool | None = None
        self.extracted: str | None = None
        self.error: BaseException | None = None
        self.generation: Generation | None = None


def panel_title(name: str, st: _Stream) -> str:
    """What the panel title says: waiting, generating, then ✓ correct / ✗ wrong once graded (markup)."""
    from rich.markup import escape

    if st.correct is True:
        state = "[green]✓ correct[/]"
    elif st.correct is False:
        state = f"[red]✗ wrong[/] [dim](answer: {escape(st.extracted or 'none found')})[/]"
    elif st.done:
        state = "[dim]grading …[/]"
    elif st.started:
        state = "[dim]generating …[/]"
    else:
        state = "[dim]waiting[/]"
    return f"{escape(name)}  {state}"


def _panels(names: Sequence[str], streams: Sequence[_Stream], problem: Problem, index: int, total: int):
    from rich.columns import Columns
    from rich.console import Group
    from rich.markup import escape
    from rich.panel import Panel
    from rich.text import Text

    header = Text.from_markup(f"[bold]problem {index + 1}/{total}[/] [dim]{escape(problem.id)}[/]  "
                              f"{escape(problem.question)}  [dim]gold:[/] {escape(problem.answer)}")
    panels = [Panel(Text(s.text or "…"), title=panel_title(n, s), expand=True) for n, s in zip(names, streams)]
    return Group(header, Columns(panels, equal=True, expand=True))


def quick_compare(lineage, problems: Sequence[Problem], config: QuickConfig, console: Any = None) -> list[QuickRow]:
    """Stream both models' answers to each problem side by side, then grade and score them."""
    from rich.console import Console
    from rich.live import Live

    console = console or Console()
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
            jobs = []
            for m, t, pr, pid, st, name in zip(models, toks, prompts, ids, streams, names):
                jobs.append((m, pid, pr.stop, settings, derived_seed(config.seed, name, "quick", pi), t, st))
            worker = threading.Thread(target=_generate_all, args=(jobs,), daemon=True)
            worker.start()
            if pi:
                console.print()  # a blank line: in a log file the next header must not run into the panels
            with Live(_panels(names, streams, problem, pi, len(problems)), console=console, refresh_per_second=12,
                      transient=False) as live:
                graded = set()
                while worker.is_alive() or len(graded) < len(streams):
                    worker.join(0.05)
                    for j, st in enumerate(streams):
                        if j not in graded and (st.generation is not None or st.error is not None):
                            graded.add(j)
                            if st.generation is not None:
                                st.done, st.text = True, st.generation.text
                                gr = grade(st.generation.text, problem.answer)
                                st.correct, st.extracted = gr.correct, gr.extracted
                    if not worker.is_alive() and any(st.generation is None and st.error is None for st in streams):
                        break
                    live.update(_panels(names, streams, problem, pi, len(problems)))
                live.update(_panels(names, streams, problem, pi, len(problems)))
            if not console.is_terminal:
                console.print()  # off a terminal Live prints its last frame without ending the line
            for st in streams:
                if st.error is not None:
                    raise st.error
            for m, name, pid, st in zip(models, names, ids, streams):
                g = st.generation
                sc = m.score([(pid, g.token_ids)])[0]
                rows.append(QuickRow(model=name, problem_id=problem.id, gold=problem.answer, response=g.text,
                                     extracted=st.extracted, correct=bool(st.correct), tokens=len(g.token_ids),
                                     mean_logprob=sc.logprob_sum / max(sc.tokens, 1),
                                     mean_entropy=sc.entropy_sum / max(sc.tokens, 1), truncated=g.finish == "length"))
    finally:
        for m in models:
            m.close()
    return rows


def _generate_all(jobs) -> None:
    """Generate each model's answer in turn (never two at once: they would share torch's random state)."""
    from transformers import TextIteratorStreamer

    for model, ids, stop, settings, seed, tok, st in jobs:
        streamer = TextIteratorStreamer(tok, skip_prompt=True, skip_special_tokens=True, timeout=600)
        reader = threading.Thread(target=_read, args=(streamer, st), daemon=True)
        reader.start()
        st.started = True
        _generate(model, ids, stop, settings, seed, streamer, st)
        reader.join()
        if st.error is not None:
            return


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


def summary_table(rows: Sequence[QuickRow], width: int = 80):
    """The one-screen table: per problem and model, the answer (green when right, else red with the gold
    answer), its length, log-prob and entropy.

    Problem and model (what identifies a row) and the numbers keep their full width; the answer
    takes what is left of ``width`` and folds when longer.
    """
    from rich.markup import escape
    from rich.table import Table

    names = list(dict.fromkeys(r.model for r in rows))
    body = [[r.problem_id, r.model, (r.extracted or "—") + ("" if r.correct else f" (gold {r.gold})"),
             f"{r.tokens}{'+' if r.truncated else ''}", f"{r.mean_logprob:.3f}", f"{r.mean_entropy:.3f}"] for r in rows]
    totals = []
    for name in names:
        mine = [r for r in rows if r.model == name]
        totals.append(["all", name, f"{sum(r.correct for r in mine)}/{len(mine)} correct",
                       f"{sum(r.tokens for r in mine) / len(mine):.1f}",
                       f"{sum(r.mean_logprob for r in mine) / len(mine):.3f}",
                       f"{sum(r.mean_entropy for r in mine) / len(mine):.3f}"])
    cols = (("problem", "left"), ("model", "left"), ("answer", "left"), ("tokens", "right"), ("log-prob", "right"),
            ("entropy", "right"))
    natural = [max(len(c) for c in [h] + [row[j] for row in body + totals]) for j, (h, _) in enumerate(cols)]
    fixed = sum(w for j, w in enumerate(natural) if j != 2)
    answer_w = min(natural[2], max(8, width - 1 - 3 * len(cols) - fixed))
    t = Table(title="ptlens quick (log-prob, entropy: means per response token, nats)", title_justify="left")
    for j, (col, just) in enumerate(cols):
        t.add_column(col, justify=just, width=answer_w if j == 2 else natural[j], no_wrap=j != 2, overflow="fold")
    for i, (r, row) in enumerate(zip(rows, body)):
        t.add_row(escape(row[0]), escape(row[1]), f"[{'green' if r.correct else 'red'}]{escape(row[2])}[/]", *row[3:],
                  end_section=i == len(body) - 1)  # a rule between the answers and the totals
    for row in totals:
        t.add_row("[bold]all[/]", *(escape(c) for c in row[1:]))
    return t
