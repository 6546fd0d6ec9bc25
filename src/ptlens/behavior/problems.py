"""Math problems with gold answers: a seeded offline generator, GSM8K, MATH-500 and JSONL files.

The builtin generator is what the embedded tiny lineage is trained and evaluated on, so its
text is short, plain ASCII, and problem ``i`` of a seed never depends on how many were asked
for (``--limit`` takes a prefix of the same list).

The lab trains on levels 1 and 2 (``IN_DISTRIBUTION_LEVELS``); level 3 (an exact division
and a third step) is never trained on. Every builtin problem carries two tags, its level and
``in-distribution`` or ``held-out``, and the default ``builtin`` set mixes them 4:1 (levels
cycle 1, 2, 1, 2, 3) so a behaviour run measures the trained task and transfer to a harder
one side by side; the behaviour results keep the two apart (``by_tag``).
"""

from __future__ import annotations

import contextlib
import json
import random
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from ptlens.config_fields import rule
from ptlens.errors import PtlensError


@dataclass(frozen=True)
class Problem:
    """One question with its exact gold answer (a string: math-verify parses it at grading)."""

    id: str
    question: str
    answer: str
    level: int = 0
    source: str = ""
    tags: tuple[str, ...] = ()
    """Labels for per-tag metrics, e.g. ``("level2", "in-distribution")``; JSONL files may give a ``tags`` list."""

    def to_dict(self) -> dict:
        return asdict(self)


_NAMES = ("Tom", "Ann", "Sam", "Mia", "Ben", "Eva", "Max", "Zoe", "Leo", "Ida")
_ITEMS = ("apples", "pens", "books", "coins", "cards", "eggs", "shells", "stamps")


def _level1(r: random.Random) -> tuple[str, int]:
    """One addition or subtraction of numbers below 50."""
    a, b = r.randint(0, 49), r.randint(0, 49)
    name, item = r.choice(_NAMES), r.choice(_ITEMS)
    if r.random() < 0.5:
        form = r.randrange(3)
        if form == 0:
            return f"What is {a} + {b}?", a + b
        if form == 1:
            return f"{name} has {a} {item} and gets {b} more. How many {item} now?", a + b
        other = r.choice([x for x in _NAMES if x != name])
        return f"{name} has {a} {item}. {other} gives {name} {b}. How many {item}?", a + b
    a, b = max(a, b), min(a, b)
    if r.random() < 0.5:
        return f"What is {a} - {b}?", a - b
    return f"{name} has {a} {item} and gives away {b}. How many {item} are left?", a - b


def _level2(r: random.Random) -> tuple[str, int]:
    """Two steps: a product plus or minus a number, or two additions and a subtraction."""
    name, item = r.choice(_NAMES), r.choice(_ITEMS)
    form = r.randrange(3)
    if form == 0:
        a, b, c = r.randint(2, 9), r.randint(2, 9), r.randint(1, 30)
        return f"{name} buys {a} bags of {b} {item} and finds {c} more. How many {item}?", a * b + c
    if form == 1:
        a, b = r.randint(2, 9), r.randint(2, 12)
        c = r.randint(1, a * b)
        return f"{name} has {a} boxes of {b} {item} and loses {c}. How many {item} are left?", a * b - c
    a, b = r.randint(10, 60), r.randint(1, 40)
    c = r.randint(1, a + b)
    return f"What is {a} + {b} - {c}?", a + b - c


def _level3(r: random.Random) -> tuple[str, int]:
    """Three steps with an exact division."""
    name, item = r.choice(_NAMES), r.choice(_ITEMS)
    form = r.randrange(2)
    if form == 0:
        k, per, extra = r.randint(2, 6), r.randint(2, 9), r.randint(1, 20)
        total = k * per
        cost = r.randint(2, 9)
        return (f"{name} shares {total} {item} among {k} kids. Each kid gets {extra} more, "
                f"then pays {cost} per item. What does one kid pay?", (per + extra) * cost)
    a, b, c, d = r.randint(2, 9), r.randint(2, 9), r.randint(1, 50), r.randint(2, 5)
    c += -(a * b + c) % d
    total = a * b + c
    return f"What is ({a} * {b} + {c}) / {d}?", total // d


_LEVELS = {1: _level1, 2: _level2, 3: _level3}
IN_DISTRIBUTION_LEVELS = (1, 2)
"""The levels the lab (and so the embedded tiny lineage) trains on; the others are held out."""
DEFAULT_LEVELS = (1, 2, 1, 2, 3)
"""The default ``builtin`` cycle: 80% in-distribution (levels 1, 2), 20% held-out (level 3)."""
IN_DISTRIBUTION, HELD_OUT = "in-distribution", "held-out"


def level_tags(level: int) -> tuple[str, ...]:
    """A builtin problem's tags: its level and whether the lab trained on that level."""
    return (f"level{level}", IN_DISTRIBUTION if level in IN_DISTRIBUTION_LEVELS else HELD_OUT)


def builtin_problems(n: int, seed: int = 0, levels: tuple[int, ...] = (1, 2, 3)) -> list[Problem]:
    """``n`` arithmetic word problems; levels cycle, and problem ``i`` depends only on (seed, level, i)."""
    bad = [lv for lv in levels if lv not in _LEVELS]
    if bad or not levels:
        raise PtlensError(f"builtin problem levels must be among {sorted(_LEVELS)}, got {list(levels)}")
    out = []
    for i in range(n):
        level = levels[i % len(levels)]
        r = random.Random(f"ptlens-builtin:{seed}:{level}:{i}")
        question, answer = _LEVELS[level](r)
        out.append(Problem(id=f"builtin-s{seed}-{i}", question=question, answer=str(answer), level=level,
                           source="builtin", tags=level_tags(level)))
    return out


def hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the hub (``HF_ENDPOINT``, default huggingface.co) cannot be reached, or None when it can.

    One TCP connection with a short timeout: without a network the datasets library retries for about
    half a minute, printing a line per retry, before it gives up.
    """
    import socket
    from urllib.parse import urlparse

    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        return f"{constants.ENDPOINT} is unreachable ({e.strerror or type(e).__name__})"
    return None


@contextlib.contextmanager
def _offline():
    """huggingface_hub's and datasets' offline switches for one load (they read them at each request)."""
    import datasets
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def _load_hf(name: str, config: str | None, split: str):
    """A hub data set; with the hub unreachable, straight from the cache (one line when it is not there)."""
    try:
        import datasets
    except ImportError:
        raise PtlensError(f"--problems {name}: needs the 'datasets' library (pip install datasets)") from None
    from huggingface_hub import constants

    why = None if constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE else hub_unreachable()
    try:
        with _offline() if why else contextlib.nullcontext():
            return datasets.load_dataset(name, config, split=split)
    except Exception as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        where = f"{why}, and it is not in the cache" if why else f"could not load it from the hub or its cache: {first}"
        raise PtlensError(f"--problems: {name} ({split}): {where}. Offline? Use --problems builtin or a JSONL file"
                          ) from None


def gsm8k_problems() -> list[Problem]:
    """openai/gsm8k test split; the gold answer is the text after '####', commas removed."""
    out = []
    for i, row in enumerate(_load_hf("openai/gsm8k", "main", "test")):
        gold = row["answer"].split("####")[-1].strip().replace(",", "")
        out.append(Problem(id=f"gsm8k-{i}", question=row["question"], answer=gold, source="gsm8k"))
    return out


def math500_problems() -> list[Problem]:
    """HuggingFaceH4/MATH-500 test split; gold is its 'answer' field (LaTeX)."""
    out = []
    for i, row in enumerate(_load_hf("HuggingFaceH4/MATH-500", None, "test")):
        pid = row.get("unique_id") or f"math500-{i}"
        out.append(Problem(id=str(pid), question=row["problem"], answer=str(row["answer"]),
                           level=int(row.get("level") or 0), source="math500"))
    return out


def jsonl_problems(path: str | Path) -> list[Problem]:
    """``{"id", "question", "answer"}`` per line; every malformed line is reported by number."""
    path = Path(path)
    if not path.is_file():
        raise PtlensError(f"--problems {path}: no such file")
    out, errors, seen = [], [], set()
    with path.open(encoding="utf-8", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                errors.append(f"line {lineno}: not JSON ({e.msg})")
                continue
            if not isinstance(row, dict):
                errors.append(f"line {lineno}: expected an object")
                continue
            missing = [k for k in ("id", "question", "answer") if row.get(k) in (None, "")]
            if missing:
                errors.append(f"line {lineno}: missing {', '.join(missing)}")
                continue
            pid = str(row["id"])
            if pid in seen:
                errors.append(f"line {lineno}: duplicate id {pid!r}")
                continue
            seen.add(pid)
            level = row.get("level", 0)
            tags = row.get("tags") or ()
            if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
                errors.append(f"line {lineno}: tags must be a list of strings")
                continue
            out.append(Problem(id=pid, question=str(row["question"]), answer=str(row["answer"]),
                               level=int(level) if isinstance(level, int) else 0, source=path.name, tags=tuple(tags)))
    if errors:
        shown = "; ".join(errors[:5]) + (f"; and {len(errors) - 5} more" if len(errors) > 5 else "")
        raise PtlensError(f"{path}: malformed problem lines: {shown}")
    if not out:
        raise PtlensError(f"{path}: no problems in file")
    return out


MAX_SEED = 2**63 - 1

SEED_CHECK = rule(lambda v: 0 <= v <= MAX_SEED, "{name} must be between 0 and 2**63 - 1, got {value}")
"""Seeds feed numpy's bootstrap and torch's sampler: both refuse negatives (after the sampling, for the
bootstrap), so every config that takes a seed checks it with this, before any work."""


def check_seed(seed: int) -> None:
    """:data:`SEED_CHECK` for a library call that is given a seed without a config."""
    message = SEED_CHECK(seed, "--seed")
    if message:
        raise PtlensError(message)


_BUILTIN = re.compile(r"^builtin(?::(\d+(?:,\d+)*))?$")


def load_problems(spec: str, limit: int | None = None, seed: int = 0) -> list[Problem]:
    """``builtin`` (or ``builtin:1,2``), ``gsm8k``, ``math500`` or a JSONL path; ``limit`` keeps a prefix.

    Plain ``builtin`` cycles ``DEFAULT_LEVELS`` (in-distribution levels 1-2 and held-out level 3, 4:1).

    Hub sets are shuffled with ``seed`` before the limit so a small run is a fair sample;
    builtin problems are generated from ``seed``; files keep their order.
    """
    if limit is not None and limit < 1:
        raise PtlensError(f"--limit must be at least 1, got {limit}")
    check_seed(seed)
    m = _BUILTIN.match(spec)
    if m:
        levels = tuple(int(x) for x in m.group(1).split(",")) if m.group(1) else DEFAULT_LEVELS
        return builtin_problems(limit or 60, seed=seed, levels=levels)
    if spec in ("gsm8k", "math500"):
        probs = gsm8k_problems() if spec == "gsm8k" else math500_problems()
        random.Random(seed).shuffle(probs)
    elif spec.endswith((".jsonl", ".json")) or Path(spec).exists():
        probs = jsonl_problems(spec)
    else:
        raise PtlensError(f"--problems {spec!r}: expected builtin, gsm8k, math500 or a .jsonl file")
    return probs[:limit] if limit else probs
