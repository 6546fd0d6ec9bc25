"""Named lineages with what is known about each stage's training.

Facts are recorded with their source; a fact nobody published stays ``None`` rather than
guessed, and the sample-efficiency figures leave that stage out.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

TULU3_PAPER = "Tülu 3 paper, Lambert et al. 2024 (arXiv:2411.15124)"


@dataclass(frozen=True)
class StageFacts:
    """What one stage was trained on; every count is a number of distinct training items."""

    algorithm: str | None = None
    examples: int | None = None
    pairs: int | None = None
    prompts: int | None = None
    epochs: float | None = None
    episodes: int | None = None
    learning_rate: float | None = None
    notes: str | None = None
    source: str | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass(frozen=True)
class PresetStage:
    label: str
    spec: str
    facts: StageFacts = field(default_factory=StageFacts)


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    stages: tuple[PresetStage, ...]

    def model_args(self) -> list[str]:
        return [f"{s.label}={s.spec}" for s in self.stages]


_TULU3_8B_SFT = StageFacts(
    algorithm="SFT", examples=939_344, epochs=2, learning_rate=5e-6, source=TULU3_PAPER
)
_TULU3_8B_DPO = StageFacts(
    algorithm="DPO (length-normalised)", pairs=271_409, epochs=1, learning_rate=5e-7,
    source=TULU3_PAPER,
)
_TULU3_8B_RLVR = StageFacts(
    algorithm="PPO with verifiable rewards (RLVR)",
    prompts=29_946,
    learning_rate=3e-7,
    notes="7,473 GSM8K + 7,500 MATH + 14,973 instruction-following prompts",
    source=TULU3_PAPER,
)


def _tulu3(size: str) -> Preset:
    known = size == "8B"
    return Preset(
        name=f"tulu3-{size.lower()}",
        description=f"Llama-3.1-{size} → Tülu 3 SFT → DPO → RLVR (PPO)",
        stages=(
            PresetStage("base", f"meta-llama/Llama-3.1-{size}",
                        StageFacts(algorithm="pretraining")),
            PresetStage("sft", f"allenai/Llama-3.1-Tulu-3-{size}-SFT",
                        _TULU3_8B_SFT if known else StageFacts(algorithm="SFT")),
            PresetStage("dpo", f"allenai/Llama-3.1-Tulu-3-{size}-DPO",
                        _TULU3_8B_DPO if known else StageFacts(algorithm="DPO (length-normalised)")),
            PresetStage("rlvr", f"allenai/Llama-3.1-Tulu-3-{size}",
                        _TULU3_8B_RLVR if known else StageFacts(algorithm="PPO with verifiable rewards (RLVR)")),
        ),
    )


def _olmo2(name: str, base: str, rlvr_label: str = "rlvr") -> Preset:
    return Preset(
        name=name,
        description=f"{base} → SFT → DPO → RLVR (OLMo 2, Tülu 3 recipe)",
        stages=(
            PresetStage("base", f"allenai/{base}", StageFacts(algorithm="pretraining")),
            PresetStage("sft", f"allenai/{base}-SFT", StageFacts(algorithm="SFT")),
            PresetStage("dpo", f"allenai/{base}-DPO", StageFacts(algorithm="DPO")),
            PresetStage(rlvr_label, f"allenai/{base}-Instruct", StageFacts(algorithm="RLVR")),
        ),
    )


_OLMO2_1B = Preset(
    name="olmo2-1b",
    description="OLMo-2-0425-1B → SFT → DPO → RLVR1 → Instruct; the RLVR1 repo has step_200 … step_2600 branches "
    "(e.g. --models … rlvr=allenai/OLMo-2-0425-1B-RLVR1@step_200 …)",
    stages=(
        PresetStage("base", "allenai/OLMo-2-0425-1B", StageFacts(algorithm="pretraining")),
        PresetStage("sft", "allenai/OLMo-2-0425-1B-SFT", StageFacts(algorithm="SFT")),
        PresetStage("dpo", "allenai/OLMo-2-0425-1B-DPO", StageFacts(algorithm="DPO")),
        PresetStage("rlvr", "allenai/OLMo-2-0425-1B-RLVR1", StageFacts(algorithm="RLVR (GRPO)")),
        PresetStage("instruct", "allenai/OLMo-2-0425-1B-Instruct", StageFacts(algorithm="RLVR")),
    ),
)

PRESETS: dict[str, Preset] = {
    p.name: p
    for p in (
        _tulu3("8B"),
        _tulu3("70B"),
        _tulu3("405B"),
        Preset(
            name="tulu3.1-8b",
            description="Llama-3.1-8B → Tülu 3 SFT → DPO → RLVR with GRPO (Tülu 3.1)",
            stages=(
                PresetStage("base", "meta-llama/Llama-3.1-8B", StageFacts(algorithm="pretraining")),
                PresetStage("sft", "allenai/Llama-3.1-Tulu-3-8B-SFT", _TULU3_8B_SFT),
                PresetStage("dpo", "allenai/Llama-3.1-Tulu-3-8B-DPO", _TULU3_8B_DPO),
                PresetStage("rlvr", "allenai/Llama-3.1-Tulu-3.1-8B",
                            StageFacts(algorithm="GRPO with verifiable rewards (RLVR)")),
            ),
        ),
        _OLMO2_1B,
        _olmo2("olmo2-7b", "OLMo-2-1124-7B"),
        _olmo2("olmo2-13b", "OLMo-2-1124-13B"),
        _olmo2("olmo2-32b", "OLMo-2-0325-32B"),
        Preset(
            name="simplerl-qwen2.5-0.5b",
            description="Qwen2.5-0.5B → RL from base (SimpleRL-Zoo)",
            stages=(
                PresetStage("base", "Qwen/Qwen2.5-0.5B", StageFacts(algorithm="pretraining")),
                PresetStage("rlvr", "hkust-nlp/Qwen-2.5-0.5B-SimpleRL-Zoo",
                            StageFacts(algorithm="GRPO from base (zero RL)")),
            ),
        ),
        Preset(
            name="deepscaler-1.5b",
            description="Qwen2.5-Math-1.5B → R1 distillation (SFT) → DeepScaleR (GRPO)",
            stages=(
                PresetStage("base", "Qwen/Qwen2.5-Math-1.5B", StageFacts(algorithm="pretraining")),
                PresetStage("sft", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
                            StageFacts(algorithm="SFT on DeepSeek-R1 samples (distillation)")),
                PresetStage("rlvr", "agentica-org/DeepScaleR-1.5B-Preview",
                            StageFacts(algorithm="GRPO with verifiable rewards")),
            ),
        ),
    )
}
