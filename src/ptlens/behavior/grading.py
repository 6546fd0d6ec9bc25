"""Grading a response against a gold answer, and the canonical key that clusters equal answers.

math-verify does the parsing and the symbolic comparison. Its time limit is a SIGALRM, which
only works in the main thread: there we use it as is; from any other thread the same work runs
in a helper process that is killed when it overruns, so a pathological answer can neither hang
a caller nor crash it. When math-verify finds nothing, a plain extraction (last ``\\boxed{}``,
"the answer is …", last number) gives the answer.
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

DEFAULT_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Grade:
    """The answer found in a response (None when there is none) and whether it equals the gold."""

    extracted: str | None
    correct: bool


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` / ``\\fbox{…}``, braces balanced."""
    starts = [m.end() for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text)]
    for start in reversed(starts):
        depth, i = 1, start
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0:
            inner = text[start:i - 1].strip()
            if inner:
                return inner
    return None


_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(.+?)(?:\.\s|\.?$|\n)", re.IGNORECASE | re.MULTILINE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?")


def extract_answer(text: str) -> str | None:
    """Fallback extraction: last ``\\boxed{}``, else the last "the answer is X", else the last number."""
    boxed = _last_boxed(text)
    if boxed is not None:
        return _clean(boxed)
    found = _ANSWER_IS.findall(text)
    if found:
        cleaned = _clean(found[-1])
        if cleaned:
            return cleaned
    nums = _NUMBER.findall(text)
    if nums:
        return _clean(nums[-1])
    return None


def _clean(s: str) -> str:
    """Strip markup that never changes an answer's value: $, **, \\$, trailing dots, thousands commas."""
    s = s.strip()
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    s = s.replace("\\$", "").replace("$", "").replace("**", "").strip()
    s = re.sub(r"\\(?:text|mathrm|textbf)\{([^{}]*)\}", r"\1", s)
    s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
    return s.strip().rstrip(".").strip()


_PLAIN_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)$")
_FRAC = re.compile(r"^([-+])?\\[dt]?frac\{?\s*(-?\d+)\s*\}?\{?\s*(\d+)\s*\}?$")
_SLASH = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")


def _as_fraction(s: str) -> Fraction | None:
    """Exact value of a plain number, ``a/b`` or ``\\frac{a}{b}``; None for anything else."""
    s = s.replace(" ", "")
    try:
        if _PLAIN_NUMBER.match(s):
            return Fraction(s)
        m = _SLASH.match(s)
        if m and int(m.group(2)):
            return Fraction(int(m.group(1)), int(m.group(2)))
        m = _FRAC.match(s)
        if m and int(m.group(3)):
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) == "-" else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def _fraction_key(f: Fraction) -> str:
    return str(f.numerator) if f.denominator == 1 else f"{f.numerator}/{f.denominator}"


def answer_key(extracted: str | None) -> str:
    """Canonical form of an answer so that equal values cluster: ``0.5``, ``1/2`` and ``\\frac{1}{2}`` → ``1/2``.

    Numbers compare exactly as fractions; other expressions by math-verify's sympy form;
    the empty string means "no answer".
    """
    if extracted is None:
        return ""
    s = _clean(extracted)
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
    try:
        import sympy

        expr = sympy.simplify(sympy.sympify(str(expr)))
        if getattr(expr, "is_number", False) and expr.is_rational:
            return _fraction_key(Fraction(str(sympy.Rational(expr))))
    except (TypeError, ValueError, AttributeError, SyntaxError, sympy.SympifyError):
        pass
    return str(expr)


def _alarm_seconds(timeout_s: float) -> int:
    return max(1, math.ceil(timeout_s))


def _gold_targets(gold: str, secs: int):
    """Gold parsed as LaTeX; thousands commas dropped for plain numbers (GSM8K writes both)."""
    from math_verify import parse

    g = gold.strip()
    plain = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", g)
    if _as_fraction(plain) is not None:
        g = plain
    wrapped = g if ("$" in g or "\\boxed" in g) else f"${g}$"
    return parse(wrapped, parsing_timeout=secs) or parse(g, parsing_timeout=secs)


def _grade_impl(response: str, gold: str, timeout_s: float) -> tuple[str | None, bool]:
    """The grading itself; runs where SIGALRM is usable (main thread or the helper process)."""
    from math_verify import parse, verify

    secs = _alarm_seconds(timeout_s)
    gold_t = _gold_targets(gold, secs)
    pred = parse(response, parsing_timeout=secs) if response.strip() else []
    extracted = _clean(str(pred[1])) if len(pred) >= 2 else None
    if not extracted:
        extracted = extract_answer(response)
        pred = parse(f"${extracted}$", parsing_timeout=secs) if extracted else []
    if not extracted:
        return None, False
    if gold_t and pred:
        correct = bool(verify(gold_t, pred, timeout_seconds=secs))
    else:
        correct = False
    if not correct:
        fe, fg = _as_fraction(extracted), _as_fraction(_clean(gold))
        correct = fe is not None and fe == fg or _clean(gold).lower() == extracted.lower()
    return extracted, correct


def grade(response: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> Grade:
    """Grade one response; safe from any thread, never raises for odd text, each math-verify step gets ``timeout_s``."""
    try:
        out = _run_limited(_grade_impl, response, gold, timeout_s)
    except Exception:
        out = None
    if out is None:
        extracted = extract_answer(response)
        fe, fg = (_as_fraction(extracted) if extracted else None), _as_fraction(_clean(gold))
        return Grade(extracted, fe is not None and fe == fg)
    return Grade(*out)


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
                raise TimeoutError(value)
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
        except Exception as e:
            reply = [False, f"{type(e).__name__}: {e}"]
        out.write(json.dumps(reply) + "\n")
        out.flush()


_WORKER = _Worker()
atexit.register(_WORKER.stop)

if __name__ == "__main__":
    _serve()
