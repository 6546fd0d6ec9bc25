"""The verifiable reward of the lab's RLVR stage: 1 when ptlens's grader says correct, else 0.

The same grader scores ``ptlens run``'s behaviour metrics, so what RL optimises is exactly what
the report measures.
"""

from __future__ import annotations

from ptlens.behavior.grading import grade


def completion_text(completion: str | list[dict]) -> str:
    """A completion as TRL passes it: plain text, or a conversational list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content", "")) for m in completion)


def correctness_reward(completions: list, answer: list[str], **_: object) -> list[float]:
    """GRPO reward function (TRL's signature: keyword columns of the dataset, one float per completion)."""
    return [1.0 if grade(completion_text(c), str(gold)).correct else 0.0 for c, gold in zip(completions, answer)]
