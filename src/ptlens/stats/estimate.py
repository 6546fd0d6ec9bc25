"""A measured value with its interval: the one estimate type of ptlens, from the bootstrap to the stored results
and the report. No numpy, so that readers of stored results need none."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping


def finite_number(v: Any) -> float | None:
    """A stored number as a float; None for a missing, non-numeric (bool included) or non-finite value."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)) else None


@dataclass(frozen=True)
class Estimate:
    """A point value with its bootstrap interval over problems and, for a paired difference, the sign-flip test's p.

    Computed here (NaN where undefined) and stored as ``{"value", "lo", "hi"[, "p"]}`` (None for NaN); read back
    from the store with :meth:`from_dict` (None for what is missing or not finite).
    """

    value: float | None
    lo: float | None = None
    hi: float | None = None
    p: float | None = None

    def to_dict(self) -> dict:
        d = {"value": self.value, "lo": self.lo, "hi": self.hi, **({"p": self.p} if self.p is not None else {})}
        return {k: (None if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: Mapping | None) -> "Estimate | None":
        """The stored form read back; None when ``d`` is no mapping (what is not an estimate)."""
        if not isinstance(d, Mapping):
            return None
        return cls(*(finite_number(d.get(k)) for k in ("value", "lo", "hi", "p")))

    @classmethod
    def coerce(cls, e: "Estimate | Mapping | None") -> "Estimate | None":
        return e if e is None or isinstance(e, Estimate) else cls.from_dict(e)

    @property
    def interval(self) -> tuple[float, float] | None:
        """(lo, hi) when both ends are finite, else None."""
        lo, hi = finite_number(self.lo), finite_number(self.hi)
        return (lo, hi) if lo is not None and hi is not None else None
