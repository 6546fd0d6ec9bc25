"""What each lab stage trains on, all drawn from ptlens's builtin problem generator.

The generator gives a question and its gold answer but no worked solution, so one is
recovered here: the question's numbers, combined left to right with + - * / (exact division
only), the chain that reaches the gold answer, preferring the operations the wording names
("more" is +, "left" is -, "of" is *, "among" is /). A question no chain explains gets the
bare boxed answer, so a change in the generator's wording degrades solutions, never labels.

Every stage draws its problems from its own generator seed, so no stage trains on another's
problems nor on the evaluation problems (level-1 arithmetic is a small space, though: the
same sums recur with different names and items).
"""

from __future__ import annotations

import itertools
import random
import re
from dataclasses import dataclass, replace

from ptlens.behavior.problems import IN_DISTRIBUTION, Problem, builtin_problems

_INT = re.compile(r"\d+")
_OPS = "+-*/"
_CUES = {
    "+": ("+", "more", "gets", "gives", "finds", "adds", "plus"),
    "-": ("-", "left", "away", "loses", "minus", "spends"),
    "*": ("*", " of ", "times", "each"),
    "/": ("/", "among", "shares", "split"),
}

# Seed offsets of the problem sets, so stages never share problems with each other or the eval set.
SEED_PRETRAIN, SEED_SFT, SEED_DPO, SEED_RL, SEED_EVAL = 101_000, 102_000, 103_000, 104_000, 109_000


def _apply(x: int, op: str, y: int) -> int | None:
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    if op == "*":
        return x * y
    return x // y if y and x % y == 0 else None


def solution_steps(question: str, answer: str) -> list[str]:
    """Equations ``a op b = c``, left to right over the question's numbers, that reach ``answer``."""
    nums = [int(n) for n in _INT.findall(question)]
    try:
        gold = int(answer)
    except ValueError:
        return []
    if len(nums) < 2 or len(nums) > 5:
        return []
    text = question.lower()
    weight = {op: sum(cue in text for cue in cues) for op, cues in _CUES.items()}
    best: tuple[int, list[str]] | None = None
    for ops in itertools.product(_OPS, repeat=len(nums) - 1):
        acc, steps = nums[0], []
        for op, y in zip(ops, nums[1:]):
            nxt = _apply(acc, op, y)
            if nxt is None:
                break
            steps.append(f"{acc} {op} {y} = {nxt}")
            acc = nxt
        else:
            if acc == gold:
                score = sum(weight[op] for op in ops)
                if best is None or score > best[0]:
                    best = (score, steps)
    return best[1] if best else []


def worked_solution(problem: Problem) -> str:
    """The SFT target: the equations, one per line, then ``\\boxed{answer}``."""
    steps = solution_steps(problem.question, problem.answer)
    return "\n".join(steps + [f"\\boxed{{{problem.answer}}}"])


def answer_only(problem: Problem) -> str:
    """A terse SFT target: the boxed answer with no working, as short answers in real instruction mixes."""
    return f"\\boxed{{{problem.answer}}}"


def sft_targets(probs: list[Problem], answer_only_share: float, seed: int) -> list[str]:
    """The SFT completions: worked solutions, except a seeded ``answer_only_share`` of bare boxed answers.

    Real SFT mixes hold demonstrations of uneven quality (terse answers, weaker teachers), and the
    model imitates all of them; answering without the working is far less accurate for a model
    this small, which is the headroom a verifier's reward finds (docs/LAB.md).
    """
    r = random.Random(f"ptlens-lab-sft-mix:{seed}")
    return [answer_only(p) if r.random() < answer_only_share else worked_solution(p) for p in probs]


def plain_solution(problem: Problem) -> str:
    """The same reasoning as pretraining text: no chat headers, no ``\\boxed``."""
    steps = solution_steps(problem.question, problem.answer)
    return "\n".join(steps + [f"The answer is {problem.answer}."])


def user_messages(problem: Problem) -> list[dict[str, str]]:
    """The prompt every stage and the evaluation use: the bare question as the user turn."""
    return [{"role": "user", "content": problem.question}]


def problems(n: int, stage_seed: int, seed: int, levels: tuple[int, ...], kind: str = IN_DISTRIBUTION) -> list[Problem]:
    """``n`` builtin problems of a stage's own seed, tagged by level and ``kind`` (the lab's levels may differ
    from the builtin default, so the tags follow the lab's split)."""
    return [replace(p, tags=(f"level{p.level}", kind)) for p in builtin_problems(n, seed=stage_seed + seed, levels=levels)]


def _equation(r: random.Random) -> str:
    """One arithmetic fact in the ranges level-1 and level-2 problems need."""
    kind = r.randrange(5)
    if kind == 0:
        a, b = r.randint(0, 60), r.randint(0, 49)
        return f"{a} + {b} = {a + b}"
    if kind == 1:
        a = r.randint(0, 110)
        b = r.randint(0, a)
        return f"{a} - {b} = {a - b}"
    if kind == 2:
        a, b = r.randint(2, 9), r.randint(2, 12)
        return f"{a} * {b} = {a * b}"
    if kind == 3:
        a, b = r.randint(4, 108), r.randint(1, 30)
        return f"{a} + {b} = {a + b}"
    a, b = r.randint(2, 9), r.randint(2, 12)
    c = r.randint(1, 30)
    return f"{a} * {b} = {a * b}\n{a * b} + {c} = {a * b + c}"


@dataclass(frozen=True)
class PretrainCorpus:
    """Raw text documents: lists of arithmetic facts, and word problems with plain-text solutions."""

    documents: list[str]
    problems_used: int


def pretrain_corpus(n_docs: int, seed: int, levels: tuple[int, ...], problem_share: float) -> PretrainCorpus:
    r = random.Random(f"ptlens-lab-pretrain:{seed}")
    n_problems = round(n_docs * problem_share)
    probs = problems(n_problems, SEED_PRETRAIN, seed, levels)
    docs = [f"{p.question}\n{plain_solution(p)}" for p in probs]
    docs += ["\n".join(_equation(r) for _ in range(r.randint(3, 8))) for _ in range(n_docs - n_problems)]
    r.shuffle(docs)
    return PretrainCorpus(documents=docs, problems_used=n_problems)
