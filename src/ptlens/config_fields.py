"""One place per option: a config dataclass field carries its default, its help text, its check and its flag.

A config declares ``n_samples: int = setting(16, help="Samples per problem and model.", flag="--n-samples",
check=at_least(1))``. The library runs every field's check with :func:`check_fields`; the CLI builds the option
from the same field (:func:`ptlens.cli.kit.option`), so a default, a help text and a check cannot drift apart
between the library, ``--help`` and the error a user sees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import MISSING, dataclass
from typing import Any, Callable, Optional

from ptlens.errors import PtlensError

Check = Callable[[Any, str], Optional[str]]
"""``check(value, name)``: the one-line error for a bad value, else None; ``name`` is the flag (else the field's name)."""

KEY = "ptlens"
"""Where a field's :class:`Setting` sits in its ``metadata``."""


@dataclass(frozen=True)
class Setting:
    """What a config field means to a user: its default, help text, flag and check."""

    default: Any
    """``dataclasses.MISSING`` when ``default_factory`` makes it."""
    help: str
    flag: Optional[str] = None
    """The CLI flag (``--n-samples``; ``--figures/--no-figures`` for an on/off pair); None: library only."""
    check: Optional[Check] = None
    default_factory: Optional[Callable[[], Any]] = None

    def field(self, **changes: Any) -> Any:
        """A new dataclass field of this setting (``changes``: other default, help or check, e.g. a shorter limit)."""
        s = dataclasses.replace(self, **changes)
        return dataclasses.field(default=s.default, default_factory=s.default_factory or MISSING, metadata={KEY: s})


def setting(default: Any = MISSING, *, help: str, flag: Optional[str] = None, check: Optional[Check] = None,
            default_factory: Optional[Callable[[], Any]] = None) -> Any:
    """A dataclass field with its help text, flag and check (``dataclasses.field`` with them in its metadata)."""
    return Setting(default, help, flag, check, default_factory).field()


def setting_of(cls: Any, name: str) -> Setting:
    """The :class:`Setting` of field ``name`` of dataclass ``cls`` (an error naming it when the field has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            s = f.metadata.get(KEY)
            if s is None:
                raise KeyError(f"{getattr(cls, '__name__', cls)}.{name} is no setting (plain field)")
            return s
    raise KeyError(f"{getattr(cls, '__name__', cls)} has no field {name!r}")


def like(cls: Any, name: str, **changes: Any) -> Any:
    """A field that is the same option as ``cls.name`` (same help, flag and check) in another config; ``changes``
    say what differs there (a default, a help text that says what the option does in that command)."""
    return setting_of(cls, name).field(**changes)


def _shown_name(s: Setting, field_name: str) -> str:
    """How an error names the field: its flag (``--figures`` of ``--figures/--no-figures``), else its name."""
    return s.flag.split("/")[0] if s.flag else field_name


def check_fields(config: Any) -> None:
    """Run every field's check, in field order; the first bad value raises :class:`PtlensError` with its line."""
    for f in dataclasses.fields(config):
        s = f.metadata.get(KEY)
        if s is not None and s.check is not None:
            message = s.check(getattr(config, f.name), _shown_name(s, f.name))
            if message:
                raise PtlensError(message)


# ---------------------------------------------------------------- checks


def rule(ok: Callable[[Any], bool], message: str) -> Check:
    """A check from a test and its message; ``{name}`` in it is the flag, ``{value}`` the value given."""

    def check(value: Any, name: str) -> Optional[str]:
        return None if ok(value) else message.format(name=name, value=value)

    return check


def at_least(low: int, why: str = "") -> Check:
    """``{name} must be at least LOW, got VALUE`` (+ ``why``); None passes (an optional number left unset)."""
    return rule(lambda v: v is None or v >= low, f"{{name}} must be at least {low}, got {{value}}{why}")


# ---------------------------------------------------------------- options that configs of several layers share


DEVICE = Setting("auto", help="auto, cpu, cuda, cuda:1 …", flag="--device")
"""The weight scan's, the behaviour engines' and the mechanism's device (each config adds its own check)."""

ALLOW_PICKLE = Setting(False, help="Accept pickle *.bin checkpoints (loaded with weights_only=True).",
                       flag="--allow-pickle")
