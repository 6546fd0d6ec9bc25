"""What ``ptlens mechanism`` is asked to do: :class:`MechanismConfig` (each option's default, help text and check on
its field: :mod:`ptlens.config_fields`) and the plain texts of its activation pass. Apart from the driver
(:mod:`ptlens.mechanism.run`) so that the CLI builds its options without importing it."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from ptlens.behavior.config import BehaviorConfig
from ptlens.config_fields import ALLOW_PICKLE, DEVICE, at_least, check_fields, like, rule, setting

PLAIN_TEXTS = (
    "The river runs through the old town and under three stone bridges.",
    "She opened the window and the cold morning air filled the room.",
    "A library is a quiet place where people read, study and borrow books.",
    "The train to the coast leaves at nine and arrives before noon.",
    "Plants need light, water and air to grow well.",
    "He wrote a short letter to his friend about the summer holiday.",
    "The market sells fresh bread, fruit, cheese and flowers every Saturday.",
    "Clouds gathered over the hills and soon it began to rain.",
    "The museum shows paintings, maps and old tools from the region.",
    "Children played in the park while their parents talked on a bench.",
    "The recipe calls for two eggs, a cup of milk and some flour.",
    "At night the city lights reflect on the surface of the lake.",
    "The team met on Monday to plan the work for the coming week.",
    "Birds build their nests in spring, high in the branches of tall trees.",
    "The old clock in the hall stopped at a quarter past four.",
    "A small boat crossed the bay as the sun went down.",
)
"""Plain text with nothing to do with arithmetic, for the ADL (the first k positions) and as unrelated inputs."""


@dataclass
class MechanismConfig:
    """Everything ``ptlens mechanism`` needs besides the lineage and the output folder."""

    problems: str = like(BehaviorConfig, "problems")
    limit: int | None = like(BehaviorConfig, "limit", default=32,
                             help="Problems for the activation pass and the transplants (greedy).")
    seed: int = like(BehaviorConfig, "seed", help="Problem selection and bootstrap.")
    transitions: str = setting("consecutive", flag="--transitions",
                               help="consecutive, or all (also first → each later).",
                               check=rule(lambda v: v in ("consecutive", "all"),
                                          "{name} must be consecutive or all, got {value!r}"))
    """consecutive (neighbours) or all (neighbours and first → each later checkpoint)."""
    max_new_tokens: int = like(BehaviorConfig, "max_new_tokens", check=at_least(1))
    hybrid_length_factor: float = 2.0
    """A and the hybrids answer in at most this × B's longest greedy answer (≥ 32, ≤ max_new_tokens) tokens:
    a hybrid still talking at twice B's length counts as truncated. Keeps rambling hybrids cheap."""
    device: str = DEVICE.field()
    dtype: str = "auto"
    instruction: str | None = like(BehaviorConfig, "instruction")
    plain_prompts: int = setting(len(PLAIN_TEXTS), help="Plain-text inputs of the activation pass (the ADL reads them).",
                                 check=rule(lambda v: 0 <= v <= len(PLAIN_TEXTS),
                                            f"{{name}} must be in 0..{len(PLAIN_TEXTS)}"))
    adl_k: int = setting(5, help="Positions of each plain text the ADL averages over.", check=at_least(1))
    adl_top: int = 10
    blocks: int = setting(4, help="Layer blocks of the transplants.", check=at_least(1))
    batch_size: int = 64
    batch_tokens: int = 8192
    n_boot: int = 1000
    transplant: bool = setting(True, flag="--transplant/--no-transplant",
                               help="Measure delta transplants (the costly part).")
    allow_pickle: bool = ALLOW_PICKLE.field()
    figures: bool = True
    overwrite: bool = setting(False, flag="--overwrite", help="Recompute even when stored results match.")

    def validate(self) -> None:
        """Every field's check (no option of the mechanism depends on another)."""
        check_fields(self)

    def fingerprint(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in ("overwrite", "figures", "allow_pickle")}
