"""Grading a response against a gold answer, and the canonical key that clusters equal answers.

Conventions (docs/GRADING.md): the text is Unicode-normalised (NFKC, minus signs and dashes,
every script's digits); the answer is the *last stated* one by position: a ``\boxed{}`` (a run of
boxes joined by commas / "and" read as a set when the gold is one), a GSM8K ``#### X``
(lm-evaluation-harness's strict-match), an "answer is X" / "Final Answer: X" / "$X$ is the
answer"; failing those, a number or expression after "=" at the end of the last line. A response
that states no final answer has none: the strict grade has no bare last-number fallback; that is
lm-eval's flexible-extract, recorded beside it (:func:`grade_flexible`). The answer's canonical
form drops markup, ``\text{}``, units, degrees, percent signs, thousands separators and a leading
``x =``; math-verify parses it and decides equivalence with the gold; the same canonical form keys
the answer clusters (maj@k, distinct answers, confidence). Checked against Math-Verify's own
tests (tests/data/math_verify_cases.json). Finding the stated answer (normalisation, the rules above, exact
numbers) is :mod:`ptlens.behavior.extraction`; this module makes the canonical form, compares it with the gold
and keeps math-verify's time limit.

math-verify's time limit is a SIGALRM, which only works in the main thread: there we use it as
is; from any other thread the same work runs in a helper process that is killed when it
overruns, so a pathological answer can neither hang a caller nor crash it.
"""

from __future__ import annotations

import atexit
import json
import os
import math
import re
import select
import subprocess
import sys
import threading
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache

from ptlens.behavior.extraction import (_as_fraction, _clean, extract_answer, extract_flexible, gold_answer,
                                        normalize_text)

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Grade:
    """The answer found in a response (None when there is none) and whether it equals the gold.

    ``fallback``: None when math-verify decided; "timeout" or "error" when it overran or failed and the
    grade is the exact comparison of plain numbers instead (counted per model in the behaviour results).
    """

    extracted: str | None
    correct: bool
    fallback: str | None = None


_RELATIONS = [(re.compile(r"!=|\\ne(?![a-z])|≠"), r"\\neq "), (re.compile(r">=|\\ge(?![a-z])|≥"), r"\\geq "),
              (re.compile(r"<=|\\le(?![a-z])|≤"), r"\\leq "), (re.compile(r"\\gt(?![a-z])"), ">"),
              (re.compile(r"\\lt(?![a-z])"), "<")]
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_NUMBER_RE = r"-?(?:\d+(?:\.\d*)?|\.\d+)(?:\s*/\s*\d+)?"
_UNIT_POWER = r"(?:\s*\^\s*(?:\d|\{\d\}))?"  # cm^2, m^{3}
_NUMBER_UNIT_TEXT = re.compile(rf"^({_NUMBER_RE})\s*\\(?:text|mbox|mathrm)\s*\{{[^{{}}]*\}}{_UNIT_POWER}$")
_NUMBER_UNIT_WORDS = re.compile(rf"^({_NUMBER_RE})\s+[A-Za-z]{{2,}}{_UNIT_POWER}(?:[\s.]+[A-Za-z]+{_UNIT_POWER})*\.?$")
_ASSIGNMENT = re.compile(r"^\s*[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=\s*([^=]+)$")


def canonical_answer(answer: str | None) -> str:
    """The answer with what never changes its value removed; grading and clustering both compare this.

    Unicode normalised and cleaned as :func:`_clean`; a number followed by ``\\text{…}`` or by words
    (units: "3 apples", ``5\\text{ cm}``) keeps the number; ``\\text{}``-like wrappers keep their
    content; degrees, percent signs and a leading currency sign go; ``x = 3`` (one variable, one
    ``=``, no comma) becomes ``3``. The empty string means no answer.
    """
    if answer is None:
        return ""
    s = _clean(normalize_text(answer))
    for _ in range(3):
        before = s
        m = _NUMBER_UNIT_TEXT.match(s)
        if m:
            s = m.group(1)
        s = _TEXT_CMD.sub(r"\1", s).strip()
        for rel, latex in _RELATIONS:
            s = rel.sub(latex, s)
        s = re.sub(r"\^\s*\{?\\circ\}?|\\%|%|\\(?:left|right)(?=[()\[\].|])", "", s).strip()
        s = re.sub(r"^(?:\\euro|€|£|¥|USD|Rs\.?)\s*", "", s).strip()
        if "," not in s:
            m = _ASSIGNMENT.match(s)
            if m:
                s = m.group(1).strip()
        m = _NUMBER_UNIT_WORDS.match(s)
        if m:
            s = m.group(1)
        s = _clean(s)
        if s == before:
            break
    return s


def _fraction_key(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def answer_key(extracted: str | None) -> str:
    """Canonical form of an answer so that answers the grader calls equal cluster together:
    ``0.5``, ``1/2``, ``\\frac{1}{2}`` → ``1/2``; ``x = 3``, ``3.0``, ``\\text{3 apples}``, ``3`` → ``3``.

    :func:`canonical_answer` first; then numbers compare exactly as fractions and other
    expressions by math-verify's sympy form; the empty string means "no answer".
    """
    s = canonical_answer(extracted)
    if not s:
        return ""
    f = _as_fraction(s)
    if f is not None:
        return _fraction_key(f)
    return _symbolic_key(s)


@lru_cache(maxsize=4096)
def _symbolic_key(s: str) -> str:
    try:
        expr = _run_limited(_parse_key, s, DEFAULT_TIMEOUT_S)
    except Exception:
        expr = None
    return expr if expr else re.sub(r"\s+", "", s).lower()


def _parse_key(s: str, timeout_s: float) -> str | None:
    from math_verify import parse

    parsed = parse(f"${s}$", parsing_timeout=_alarm_seconds(timeout_s))
    if not parsed:
        return None
    expr = parsed[0]
    import sympy
    from math_verify.errors import TimeoutException
    from math_verify.utils import timeout

    def simplified(e):
        e = sympy.simplify(sympy.sympify(str(e)))
        if getattr(e, "is_number", False) and e.is_rational:
            return _fraction_key(Fraction(str(sympy.Rational(e))))
        return str(e)

    try:  # under the same time limit as parsing: sympify of 9^{9^{9^9}} would never end
        return timeout(_alarm_seconds(timeout_s))(simplified)(expr)
    except (TypeError, ValueError, AttributeError, SyntaxError, sympy.SympifyError, TimeoutException):
        return str(expr)


def _alarm_seconds(timeout_s: float) -> int:
    return max(1, math.ceil(timeout_s))


def _parse_answer(s: str, secs: int):
    """math-verify's parse of a canonical answer: LaTeX first, then a plain expression (its default targets)."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    return parse(f"${s}$", [LatexExtractionConfig(), ExprExtractionConfig()], parsing_timeout=secs,
                 raise_on_error=True)


_TOP_LEVEL_SEP = re.compile(r"[,;]|\band\b")


def _is_set(canonical: str) -> bool:
    """Whether a canonical gold lists several answers (``1, 2``, ``(2, 2), (6, 2)``, ``\\{1, 2\\}``, ``k = 45, n = 2``)."""
    s = canonical.strip()
    if re.match(r"^\\?\{.*,.*\\?\}$", s):
        return True
    depth = 0
    for i, c in enumerate(s):
        depth += (c in "([{") - (c in ")]}")
        if depth == 0 and _TOP_LEVEL_SEP.match(s, i):
            return True
    return False


def _grade_impl(response: str, gold: str, timeout_s: float) -> tuple[str | None, bool]:
    """The grading itself; runs where SIGALRM is usable (main thread or the helper process)."""
    from math_verify import verify

    gold_s = canonical_answer(gold_answer(gold))
    extracted = extract_answer(response, multi=_is_set(gold_s))
    pred_s = canonical_answer(extracted)
    if not pred_s:
        return None, False
    secs = _alarm_seconds(timeout_s)
    fe, fg = _as_fraction(pred_s), _as_fraction(gold_s)
    if fe is not None and fg is not None:
        return extracted, fe == fg  # two plain numbers: exact, no sympy needed
    if pred_s.replace(" ", "").lower() == gold_s.replace(" ", "").lower():
        return extracted, True
    gold_t, pred = _parse_answer(gold_s, secs), _parse_answer(pred_s, secs)
    correct = bool(gold_t and pred and verify(gold_t, pred, timeout_seconds=secs, raise_on_error=True))
    return extracted, correct


def grade(response: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Grade:
    """Grade one response; safe from any thread, never raises for odd text, each math-verify step gets ``timeout_s``.

    When math-verify overruns or fails the grade is the exact comparison of plain numbers, and the
    returned :class:`Grade` says so (``fallback``), so that callers count it rather than hide it.
    """
    from math_verify.errors import TimeoutException  # a BaseException: `except Exception` misses it

    try:
        return Grade(*_run_limited(_grade_impl, response, gold, timeout_s))
    except (TimeoutError, TimeoutException):  # math-verify's SIGALRM limit, or the helper overran
        reason = "timeout"
    except Exception:  # a parser's error (math-verify raises them: raise_on_error=True)
        reason = "error"
    gold_s = canonical_answer(gold_answer(gold))
    extracted = extract_answer(response, multi=_is_set(gold_s))
    fe, fg = _as_fraction(canonical_answer(extracted)), _as_fraction(gold_s)
    return Grade(extracted, fe is not None and fe == fg, reason)


def grade_flexible(response: str, gold: str) -> Grade:
    """The flexible grade beside the strict one, for comparison with papers that report it: the last number
    of the response against the gold, exactly as numbers (a gold that is not a plain number is never matched)."""
    extracted = extract_flexible(response)
    fe, fg = _as_fraction(canonical_answer(extracted)), _as_fraction(canonical_answer(gold_answer(gold)))
    return Grade(extracted, fe is not None and fe == fg)


def _run_limited(fn, *args):
    """Run ``fn(*args)`` under a time limit: in this thread when it is the main one, else in the helper."""
    if threading.current_thread() is threading.main_thread():
        return fn(*args)
    return _WORKER.call(fn.__name__, args, timeout_s=float(args[-1]) * 4 + 2)


class _Worker:
    """One helper process (``python -m ptlens.behavior.grading``) for grading off the main thread.

    A plain subprocess speaking JSON lines rather than multiprocessing, so the caller's
    ``__main__`` is never re-imported; killed and restarted when a call overruns.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-m", "ptlens.behavior.grading"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        self._proc = proc
        if self._readline(120) != "ready":
            self.stop()
            raise TimeoutError("grading helper did not start")
        return proc

    def _readline(self, timeout_s: float) -> str | None:
        ready, _, _ = select.select([self._proc.stdout], [], [], timeout_s)
        if not ready:
            return None
        line = self._proc.stdout.readline()
        return line.rstrip("\n") if line else None

    def call(self, name: str, args: tuple, timeout_s: float):
        with self._lock:
            if self._proc is None or self._proc.poll() is not None:
                self._start()
            try:
                self._proc.stdin.write(json.dumps([name, list(args)]) + "\n")
                self._proc.stdin.flush()
            except OSError:
                self.stop()
                raise TimeoutError("grading helper died") from None
            line = self._readline(timeout_s)
            if line is None:
                self.stop()
                raise TimeoutError(f"grading took longer than {timeout_s:.0f}s")
            try:
                ok, value = json.loads(line)
            except ValueError:
                self.stop()
                raise TimeoutError("grading helper sent a malformed reply") from None
            if not ok:
                raise (TimeoutError if value.startswith("TimeoutException") else RuntimeError)(value)
            return tuple(value) if isinstance(value, list) else value

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(5)
        self._proc = None


def _serve() -> None:
    """The helper's loop: one JSON request per stdin line, one JSON reply per stdout line."""
    import importlib

    importlib.import_module("math_verify")  # before 'ready', so no call is charged for the import
    from math_verify.errors import TimeoutException

    funcs = {"_grade_impl": _grade_impl, "_parse_key": _parse_key}
    out = os.fdopen(os.dup(1), "w")  # replies only: anything a parser prints goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out.write("ready\n")
    out.flush()
    for line in sys.stdin:
        try:
            name, args = json.loads(line)
            reply = [True, funcs[name](*args)]
        except (Exception, TimeoutException) as e:
            reply = [False, f"{type(e).__name__}: {e}"]
        out.write(json.dumps(reply) + "\n")
        out.flush()


_WORKER = _Worker()
atexit.register(_WORKER.stop)

if __name__ == "__main__":
    _serve()
