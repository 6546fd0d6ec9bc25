"""The verifiable reward of the lab's RLVR stage: 1 when ptlens's grader says correct, else 0.

The same grader scores ``ptlens run``'s behaviour metrics, so what RL optimises is exactly what
the report measures.
"""

from __future__ import annotations

import re

from ptlens.behavior.extraction import normalize_text
from ptlens.behavior.grading import grade


def completion_text(completion: str | list[dict]) -> str:
    """A completion as TRL passes it: plain text, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content", "")) for m in completion)


def correctness_reward(completions: list, answer: list[str], **_: object) -> list[float]:
    """GRPO reward function (TRL's signature: keyword columns of the dataset, one float per completion)."""
    return [1.0 if grade(completion_text(c), str(gold)).correct else 0.0 for c, gold in zip(completions, answer)]


_LAST_NUMBER = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?")


def last_number_reward(completions: list, answer: list[str], **_: object) -> list[float]:
    """1 when the completion's last number equals the gold answer (lm-evaluation-harness's gsm8k
    "flexible-extract"): a lenient reward for models too young to state an answer in a form the
    grader accepts (``ptlens lab --quick``)."""
    out = []
    for c, gold in zip(completions, answer):
        nums = _LAST_NUMBER.findall(normalize_text(completion_text(c)))
        out.append(1.0 if nums and nums[-1].replace(",", "") == str(gold).strip() else 0.0)
    return out


REWARDS = {"grader": correctness_reward, "last-number": last_number_reward}
