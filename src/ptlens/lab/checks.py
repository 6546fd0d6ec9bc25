"""Degenerate training signals a lab stage can hit, and what to change: pure functions of its records.

A stage whose signal is degenerate still runs and is saved (ptlens then measures a stage that did
nothing, which is itself a finding), but ``ptlens lab`` logs the warning and records it in
``lineage.json`` so nobody reads a null update as what that algorithm does.
"""

from __future__ import annotations

from collections.abc import Sequence


def dpo_pairs_warning(stats: dict, batch_size: int) -> str | None:
    """No (or fewer than one batch of) on-policy pairs: every prompt's samples were all right or all wrong."""
    pairs = int(stats.get("pairs", 0))
    if pairs >= batch_size:
        return None
    acc = stats.get("sample_accuracy", 0.0)
    why = ("the SFT model's samples were all correct or all wrong on every prompt" if pairs == 0 else
           f"only {pairs} prompts gave a correct and an incorrect sample (fewer than one batch of {batch_size})")
    fix = ("train SFT longer (drop --quick) or raise the DPO sampling temperature" if acc < 0.5 else
           "sample more answers per prompt, raise the sampling temperature, or use harder prompts")
    return f"dpo: {why} (sample accuracy {acc}); {'DPO was skipped: dpo = sft. ' if pairs == 0 else ''}To fix: {fix}."


def grpo_reward_warning(history: Sequence[dict]) -> str | None:
    """All-zero reward, or no reward variance within any group: GRPO's advantages were all zero, so no update."""
    rewards = [h["reward"] for h in history if "reward" in h]
    if not rewards:
        return None
    if max(rewards) == 0:
        return ("rlvr: the reward was 0 on every sample, so every group-normalised advantage was 0 and GRPO did not "
                "update the weights. To fix: train SFT longer (drop --quick), use easier RL prompts, more generations "
                "per prompt or a higher sampling temperature.")
    zero_std = [h["frac_reward_zero_std"] for h in history if "frac_reward_zero_std" in h]
    if zero_std and min(zero_std) >= 1.0:
        return ("rlvr: within every group all samples got the same reward (all right or all wrong), so every "
                "advantage was 0 and GRPO did not update the weights. To fix: more generations per prompt, a higher "
                "sampling temperature, or prompts of a difficulty the model solves sometimes.")
    return None


def stored_change_warning(stage: str, changed_share: float) -> str | None:
    """The stage's stored checkpoint is bit-identical to its start: its update was below storage precision."""
    if changed_share > 0:
        return None
    return (f"{stage}: the stored checkpoint is bit-identical to the one it started from (every update was below "
            f"half a unit in the last place of the stored dtype). To fix: a larger learning rate or more steps.")
