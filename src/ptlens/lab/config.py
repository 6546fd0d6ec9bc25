"""The lab's settings as typed data: the CLI builds a ``LabConfig``, ``run_lab`` consumes it.

Two profiles: the default run (about 17 minutes with 1 thread on 2 CPU cores; the one shipped with
ptlens) and ``quick`` (under 2 minutes, for tests: same pipeline, a fraction of the steps).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from ptlens.behavior.config import BehaviorConfig
from ptlens.config_fields import at_least, check_fields, like, setting


@dataclass(frozen=True)
class ModelShape:
    """Llama-3-like (grouped-query attention, SwiGLU, RMSNorm, RoPE), scaled down to ~0.7M parameters.

    Head dimension 32 (hidden 128 / 4 heads, 2 key-value heads): the smallest head size every
    engine ptlens drives accepts (vLLM's CPU attention rejects the earlier 24). A 96-wide model
    with 3 heads and 1 key-value head (also head_dim 32) plateaued in pretraining (loss 0.82 from
    step 120 of 600) and its SFT reached 4% greedy accuracy, so the heads of the earlier working
    model are kept and the width grows instead.
    """

    hidden: int = 128
    intermediate: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    max_positions: int = 256

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class PretrainPlan:
    """Next-token training on packed raw text (documents joined by EOS, cut into blocks)."""

    steps: int = 900
    batch_size: int = 32
    seq_len: int = 128
    learning_rate: float = 5e-3
    documents: int = 40_000
    problem_share: float = 0.5
    checkpoints: int = 2


@dataclass(frozen=True)
class SFTPlan:
    """Question → demonstration with TRL's SFTTrainer, loss on the answer only.

    The demonstrations are uneven, as real SFT mixes are: half give the worked equations then
    ``\\boxed{answer}``, half only the boxed answer (``answer_only_share``). The model imitates both;
    without the working it is rarely right, so its sampled accuracy sits well below its greedy
    one, and DPO's and GRPO's verifiable signals have a behaviour to select (docs/LAB.md: SFT alone
    on worked solutions left GRPO nothing to improve in seven settings). 800 steps over 25,600 examples
    (one epoch) keep 12,800 worked solutions, what the earlier all-worked 400-step schedule needed:
    with head_dim 32 the model learns to copy the question's numbers late (greedy 6% at step 100,
    16% at 200, 81% at 300 of that schedule).
    """

    steps: int = 800
    batch_size: int = 32
    learning_rate: float = 1e-3
    examples: int = 25_600
    checkpoints: int = 2
    answer_only_share: float = 0.5
    """Share of demonstrations that give the bare ``\\boxed{answer}`` without the working (``data.sft_targets``)."""


@dataclass(frozen=True)
class DPOPlan:
    """Pairs of a correct and an incorrect sample of the SFT model, with TRL's DPOTrainer.

    Plain sigmoid DPO lowered this tiny model's accuracy even at low learning rates (both
    log-probabilities fall); adding the NLL of the chosen answer (RPO, Pang et al. 2024)
    keeps it stable, so that is the default loss.
    """

    prompts: int = 500
    samples_per_prompt: int = 4
    temperature: float = 0.7
    steps: int = 30
    batch_size: int = 16
    learning_rate: float = 2e-5
    beta: float = 0.1
    loss_type: tuple[str, ...] = ("sigmoid", "sft")
    loss_weights: tuple[float, ...] = (1.0, 1.0)
    reference_fallback: bool = False
    checkpoints: int = 2


@dataclass(frozen=True)
class GRPOPlan:
    """RL from verifiable rewards with TRL's GRPOTrainer.

    ``reward``: ``"grader"`` (1 when ptlens's grader marks the answer correct: what the report
    measures) or ``"last-number"`` (1 when the response's last number equals the gold answer:
    lm-evaluation-harness's "flexible-extract"; for ``--quick``, whose barely trained model never
    writes a final-answer form the grader accepts, so the strict reward would be 0 everywhere).
    """

    steps: int = 60
    prompts_per_step: int = 8
    generations: int = 8
    learning_rate: float = 5e-5
    beta: float = 0.0
    temperature: float = 1.0
    top_p: float = 1.0
    max_completion_length: int = 48
    prompts: int = 480
    loss_type: str = "dapo"
    scale_rewards: str = "group"
    checkpoints: int = 3
    reward: str = "grader"

    def options(self) -> dict:
        """The GRPOConfig settings beyond the common ones (recorded in lineage.json)."""
        return {"top_p": self.top_p, "loss_type": self.loss_type, "scale_rewards": self.scale_rewards}


@dataclass(frozen=True)
class ControlledPlan:
    """Two arms from one SFT checkpoint, same prompts, same number of examples: more SFT vs GRPO."""

    prompts: int = 256
    examples: int = 512
    sft_batch_size: int = 8
    sft_learning_rate: float = 1e-4
    grpo_prompts_per_step: int = 8
    grpo_learning_rate: float = 5e-5
    checkpoints: int = 3


@dataclass
class LabConfig:
    """Everything that decides a lab run.

    Two runs with equal configs (thread count included) on the same software versions give
    bit-identical checkpoints. ``quick=True`` replaces the stage plans with the quick profile.
    """

    output_dir: Path = setting(Path("ptlens-lab"), flag="--output-dir",
                               help="Where checkpoints and lineage.json go (default: ./ptlens-lab).")
    seed: int = like(BehaviorConfig, "seed", help="Seed of every random choice: data, initialisation, sampling.")
    quick: bool = setting(False, flag="--quick", help=(
        "The same pipeline with a fraction of the steps, for tests: 30 s on an idle 2-core machine (minutes beside "
        "other jobs) instead of the full run's 17 min (1,039 s for the shipped run, 1 thread on 2 cores beside "
        "other jobs; docs/LAB.md)."))
    controlled: bool = setting(False, flag="--controlled", help=(
        "Also train two arms from the SFT checkpoint: more SFT vs GRPO, same prompts and examples."))
    threads: int = setting(2, flag="--threads", help="CPU threads for torch.", check=at_least(1))
    levels: tuple[int, ...] = (1, 2)
    held_out_levels: tuple[int, ...] = (3,)
    """Evaluated, never trained on: transfer to a harder level."""
    eval_problems: int = 200
    held_out_problems: int = 100
    eval_samples: int = 4
    """Samples per problem of the sampled evaluation (temperature 0.6, top-p 0.95, as ``ptlens run``)."""
    max_new_tokens: int = 48
    storage_dtype: str = "bfloat16"
    """Checkpoints are stored in this dtype, as released checkpoints are; training keeps float32 master
    weights, and each stage starts from the previous stage's stored checkpoint (upcast to float32)."""
    model: ModelShape = field(default_factory=ModelShape)
    pretrain: PretrainPlan = field(default_factory=PretrainPlan)
    sft: SFTPlan = field(default_factory=SFTPlan)
    dpo: DPOPlan = field(default_factory=DPOPlan)
    rlvr: GRPOPlan = field(default_factory=GRPOPlan)
    arms: ControlledPlan = field(default_factory=ControlledPlan)

    def __post_init__(self) -> None:
        self.output_dir = Path(self.output_dir)
        self.levels = tuple(self.levels)
        self.held_out_levels = tuple(self.held_out_levels)
        if self.quick:
            self.apply_quick()

    def validate(self) -> None:
        """Every field's check (the stage plans are the profiles' own, not options)."""
        check_fields(self)

    def apply_quick(self) -> None:
        """Shrink every stage so the whole pipeline runs in well under 2 minutes."""
        self.quick = True
        self.eval_problems = min(self.eval_problems, 40)
        self.held_out_problems = min(self.held_out_problems, 20)
        self.eval_samples = min(self.eval_samples, 2)
        self.max_new_tokens = min(self.max_new_tokens, 32)
        self.pretrain = PretrainPlan(steps=40, batch_size=16, seq_len=96, documents=2_000, checkpoints=1)
        self.sft = SFTPlan(steps=20, batch_size=16, examples=320, checkpoints=1)
        self.dpo = DPOPlan(prompts=48, samples_per_prompt=4, temperature=1.0, steps=6, batch_size=8,
                           reference_fallback=True, checkpoints=1)
        # the barely trained quick model is right on ~2% of samples: enough samples per step at temperature 1
        # that some groups hold a correct answer, so GRPO gets a reward signal (tests check it updates)
        self.rlvr = GRPOPlan(steps=4, prompts_per_step=4, generations=8, prompts=16, temperature=1.0,
                             max_completion_length=24, learning_rate=1e-4, checkpoints=2,
                             reward="last-number")
        self.arms = ControlledPlan(prompts=8, examples=8, sft_batch_size=4, grpo_prompts_per_step=2, checkpoints=1)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["output_dir"] = str(self.output_dir)
        d["levels"] = list(self.levels)
        d["held_out_levels"] = list(self.held_out_levels)
        return d
