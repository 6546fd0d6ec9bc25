"""The lab's pure parts: reward, worked solutions, tokenizer, config, and its failure messages."""

from __future__ import annotations

import json

import pytest
import typer
from typer.testing import CliRunner

from ptlens.behavior.grading import grade
from ptlens.behavior.problems import builtin_problems
from ptlens.errors import PtlensError
from ptlens.lab.config import LabConfig
from ptlens.lab.data import plain_solution, solution_steps, worked_solution
from ptlens.lab.reward import completion_text, correctness_reward

REWARD_TABLE = [
    ("3 + 4 = 7\n\\boxed{7}", "7"),
    ("3 + 4 = 8\n\\boxed{8}", "7"),
    ("\\boxed{ 12 }", "12"),
    ("The answer is 41.", "41"),
    ("41", "14"),
    ("no number here", "5"),
    ("", "0"),
    ("\\boxed{0}", "0"),
    ("\\boxed{-3}", "-3"),
    ("2 * 5 = 10\n10 + 3 = 13\n\\boxed{13}\n\\boxed{12}", "13"),
    ("\\boxed{1,000}", "1000"),
    ("\\boxed{7", "7"),
]


def test_reward_agrees_with_grader_on_a_table_of_answers():
    texts = [t for t, _ in REWARD_TABLE]
    golds = [g for _, g in REWARD_TABLE]
    expected = [1.0 if grade(t, g).correct else 0.0 for t, g in REWARD_TABLE]
    assert correctness_reward(completions=texts, answer=golds) == expected
    conversational = [[{"role": "assistant", "content": t}] for t in texts]
    assert correctness_reward(completions=conversational, answer=golds, trainer_state=None) == expected
    assert expected[:3] == [1.0, 0.0, 1.0] and sum(expected) >= 5


def test_completion_text_joins_message_contents():
    assert completion_text("x") == "x"
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]) == "ab"


def test_worked_solutions_reach_the_gold_answer_for_every_level():
    for p in builtin_problems(300, seed=7, levels=(1, 2, 3)):
        steps = solution_steps(p.question, p.answer)
        assert steps, p.question
        assert steps[-1].endswith(f"= {p.answer}")
        assert grade(worked_solution(p), p.answer).correct
        assert "\\boxed" not in plain_solution(p) and plain_solution(p).endswith(f"The answer is {p.answer}.")


def test_solution_prefers_the_operation_the_wording_names():
    assert solution_steps("Tom has 2 apples and gets 2 more. How many apples now?", "4") == ["2 + 2 = 4"]
    assert solution_steps("Ann has 2 boxes of 2 pens and loses 0. How many pens are left?", "4") == ["2 * 2 = 4", "4 - 0 = 4"]
    assert solution_steps("What is seven?", "7") == []


def test_tokenizer_round_trips_ascii_and_renders_prompts_as_prefixes(tmp_path):
    pytest.importorskip("tokenizers")
    from transformers import AutoTokenizer

    from ptlens.lab.tokenizer import build_tokenizer, save_tokenizer

    save_tokenizer(build_tokenizer(), tmp_path)
    tok = AutoTokenizer.from_pretrained(tmp_path)
    text = "Tom has 12 pens.\nWhat is (4 * 6 + 12) / 4? \\boxed{9} ~|{}"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert len(ids) == len(text) and tok.decode(ids) == text
    assert tok.eos_token and tok.pad_token and tok.bos_token and tok.pad_token_id != tok.eos_token_id
    user = [{"role": "user", "content": "What is 2 + 3?"}]
    prompt = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
    full = tok.apply_chat_template(user + [{"role": "assistant", "content": "\\boxed{5}"}], tokenize=False)
    assert prompt == "<|user|>\nWhat is 2 + 3?\n<|assistant|>\n"
    assert full.startswith(prompt) and full == prompt + "\\boxed{5}" + tok.eos_token + "\n"
    assert tok(prompt, add_special_tokens=False)["input_ids"] == tok.apply_chat_template(
        user, add_generation_prompt=True, tokenize=True, return_dict=False)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"


def test_quick_config_is_smaller_and_serialisable(tmp_path):
    full, quick = LabConfig(output_dir=tmp_path), LabConfig(output_dir=tmp_path, quick=True)
    assert quick.pretrain.steps < full.pretrain.steps and quick.rlvr.steps < full.rlvr.steps
    assert quick.sft.examples < full.sft.examples
    json.dumps(quick.to_dict())
    assert quick.to_dict()["output_dir"] == str(tmp_path)


def _app():
    from ptlens.cli.lab import lab

    app = typer.Typer()
    app.command()(lab)
    return app


def test_lab_without_trl_says_how_to_install(monkeypatch):
    import importlib.util

    from ptlens.lab import runner

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "trl" else real(name, *a))
    with pytest.raises(PtlensError, match=r"pip install 'ptlens\[lab\]'"):
        runner.require_lab_deps()
    result = CliRunner().invoke(_app(), ["--quick", "--output-dir", "x"])
    assert result.exit_code == 2
    assert "pip install" in result.output


def test_ship_refuses_other_output_options():
    pytest.importorskip("trl")
    result = CliRunner().invoke(_app(), ["--ship", "--quick"])
    assert result.exit_code == 2
    assert "--ship" in result.output


def test_degenerate_signals_are_named_with_a_fix():
    from ptlens.lab.checks import dpo_pairs_warning, grpo_reward_warning, stored_change_warning

    zero = [{"step": i, "reward": 0.0, "reward_std": 0.0, "frac_reward_zero_std": 1.0} for i in (1, 2)]
    msg = grpo_reward_warning(zero)
    assert msg and "reward was 0 on every sample" in msg and "To fix" in msg
    all_right = [{"step": 1, "reward": 1.0, "frac_reward_zero_std": 1.0}]
    assert "same reward" in grpo_reward_warning(all_right)
    assert grpo_reward_warning(zero + [{"step": 3, "reward": 0.25, "frac_reward_zero_std": 0.5}]) is None
    assert grpo_reward_warning([]) is None
    assert "DPO was skipped" in dpo_pairs_warning({"pairs": 0, "sample_accuracy": 0.0}, 8)
    assert "only 3 prompts" in dpo_pairs_warning({"pairs": 3, "sample_accuracy": 0.9}, 8)
    assert dpo_pairs_warning({"pairs": 8, "sample_accuracy": 0.5}, 8) is None
    assert "bit-identical" in stored_change_warning("rlvr", 0.0) and stored_change_warning("rlvr", 1e-6) is None


def test_lab_eval_set_tags_trained_and_held_out_levels(tmp_path):
    from ptlens.lab.evaluation import eval_problems

    cfg = LabConfig(output_dir=tmp_path, eval_problems=10, held_out_problems=4)
    ps = eval_problems(cfg)
    assert [p.tags[1] for p in ps] == ["in-distribution"] * 10 + ["held-out"] * 4
    assert {p.level for p in ps[:10]} == {1, 2} and {p.level for p in ps[10:]} == {3}


def test_stage_comparisons_equal_hand_computed_paired_differences(tmp_path):
    from ptlens.lab.evaluation import eval_problems, stage_comparisons

    ps = eval_problems(LabConfig(output_dir=tmp_path, eval_problems=4, held_out_problems=2))
    per = {"sft": {"greedy": [1, 0, 1, 0, 0, 0], "sampled": [2, 1, 4, 0, 0, 1]},
           "rlvr": {"greedy": [1, 1, 1, 1, 0, 0], "sampled": [4, 3, 4, 2, 1, 0]}}
    (c,) = stage_comparisons(ps, per, 4, 0, [("sft", "rlvr")], n_boot=200)
    assert c["pair"] == "rlvr - sft"
    assert c["in-distribution"]["greedy"]["value"] == pytest.approx(0.5)
    assert c["in-distribution"]["t0.6"]["value"] == pytest.approx((13 - 7) / 16)
    assert c["held-out"]["t0.6"]["value"] == pytest.approx(0.0)
    assert c["in-distribution"]["t0.6"]["lo"] > 0  # every problem improved or tied


def test_last_number_reward_is_flexible_extract():
    """--quick's lenient reward: the last number of the response (lm-eval's flexible-extract), not the grader."""
    from ptlens.lab.reward import REWARDS, last_number_reward

    got = last_number_reward(["so x = 1,200 then", "abc 29", "\u22123", "no number", "12 then 7", "29.0"],
                             ["1200", "29", "-3", "1", "12", "29"])
    assert got == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert REWARDS["grader"](["abc 29"], ["29"]) == [0.0]  # the strict grader wants a stated answer
    assert REWARDS["grader"](["so \\boxed{29}"], ["29"]) == [1.0]
