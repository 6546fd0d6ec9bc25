"""Finding the answer a response states: Unicode normalisation, the *last stated* answer by position (boxes,
GSM8K ``####``, "the answer is", a final "= X"; the rules are in :mod:`ptlens.behavior.grading` and
docs/GRADING.md), lm-eval's flexible last number, and the exact value of a plain number or fraction.
Pure string work: no math-verify, so extraction never waits on a parser's time limit.
"""

from __future__ import annotations

import re
import unicodedata
from fractions import Fraction


# ---------------------------------------------------------------- Unicode

_SUPERSCRIPTS = dict(zip("⁰¹²³⁴⁵⁶⁷⁸⁹⁺⁻", "0123456789+-"))
_SUPERSCRIPT_RUN = re.compile(f"[{''.join(_SUPERSCRIPTS)}]+")
_DASHES = {ord(c): "-" for c in "\u2212\u2010\u2011\u2012\u2013\ufe63\uff0d\u02d7\u2796"}  # minus, hyphens, figure/en dash
_SYMBOLS = {"π": r"\pi ", "∞": r"\infty ", "√": r"\sqrt ", "×": r"\times ", "÷": r"\div ", "·": r"\cdot ",
            "⁄": "/", "°": r"^\circ ", "٫": ".", "٬": ","}


def normalize_text(text: str) -> str:
    """NFKC, then minus signs and dashes → ``-``, any script's decimal digits → ASCII, a few math symbols → LaTeX.

    Superscripts become ``^{…}`` first (NFKC alone would turn ``3²`` into ``32``); the em dash stays
    punctuation. Without this a U+2212 minus was dropped and "−3" graded equal to 3.
    """
    text = _SUPERSCRIPT_RUN.sub(lambda m: "^{" + "".join(_SUPERSCRIPTS[c] for c in m.group()) + "}", text)
    text = unicodedata.normalize("NFKC", text).translate(_DASHES)
    if not text.isascii():
        text = "".join(str(unicodedata.decimal(c)) if c.isdecimal() and not c.isascii() else _SYMBOLS.get(c, c)
                       for c in text)
    return text


# ---------------------------------------------------------------- extraction


def _box_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, content) of every ``\\boxed{…}`` / ``\\fbox{…}`` with balanced braces, in order; empty ones
    left out."""
    out = []
    for m in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        if depth == 0 and text[m.end():i - 1].strip():
            out.append((m.start(), i, text[m.end():i - 1].strip()))
    return out


def _boxes(text: str) -> list[str]:
    """Contents of every ``\\boxed{…}`` / ``\\fbox{…}`` with balanced braces, in order; empty ones left out."""
    return [c for _, _, c in _box_spans(text)]


def _last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{…}`` / ``\\fbox{…}``, braces balanced."""
    boxes = _boxes(text)
    return boxes[-1] if boxes else None


_SEP_MARKUP = re.compile(r"\$+|\\[\[\]()]|\\q?quad\b|\\[,;!: ]|\\\\|&|\\text\s*\{([^{}]*)\}|\*\*")
_SEP_VAR = re.compile(r"[A-Za-z](?:_\{?\w+\}?)?\s*=\s*$")
_SEP_JOIN = re.compile(r"[\s,;.]*(?:(?:for|in)\s+part\s*\(?\w\)?\s*|[A-Za-z]+\s+(?=and|or))?(?:,?\s*(?:and|or)\b)?[\s,;.]*",
                       re.IGNORECASE)


def _box_runs(text: str) -> list[tuple[int, list[str]]]:
    """Boxes grouped into runs joined only by commas / "and" / "or" / spacing (``\\boxed{1}, \\boxed{2}``,
    ``\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}``); (start of the run's last box, contents)."""
    runs: list[tuple[int, list[str]]] = []
    prev_end = None
    for start, end, content in _box_spans(text):
        sep = _SEP_VAR.sub("", _SEP_MARKUP.sub(lambda m: m.group(1) or " ", text[prev_end:start])) \
            if prev_end is not None else None
        if sep is not None and _SEP_JOIN.fullmatch(sep):
            runs[-1][1].append(content)
            runs[-1] = (start, runs[-1][1])
        else:
            runs.append((start, [content]))
        prev_end = end
    return runs


_GSM8K = re.compile(r"#### (\-?[0-9\.\,]+)")  # lm-evaluation-harness gsm8k "strict-match", verbatim
_ANSWER_IS = re.compile(r"\banswer\s*(?:is\s*:?|:)|\bsolution\s+is\s*:?|\banswer\b\s*(?=\$|\\[(\[])", re.IGNORECASE)
_IS_THE_ANSWER = re.compile(r"(\$[^$\n]{1,300}\$|\\\((?:(?!\\\)).){1,300}\\\))"  # bounded: no quadratic walks
                            r"\s*is\s+(?:the|our)\s+(?:final\s+)?(?:answer|solution)\b", re.IGNORECASE)
_UNTIL_SENTENCE_END = re.compile(r"\s*(.{1,500}?)\s*(?:\.\s|\.?\s*$|\n|;|,?\s+(?:so|which|because|but|since)\b)", re.MULTILINE)
_LAST_LINE_EQ = re.compile(r"=\s*([^=]{1,60}?)\s*\.?\s*$")
_ANSWER_START = re.compile(r"^\s*(?:\$|\\[(\[]|\\|[-+(\[{.\d])")
_MATH_OPEN = {"$$": "$$", "\\[": "\\]", "\\(": "\\)", "$": "$"}
_PAREN_NOTE = re.compile(r"^(.+?)\s*\(([^()]*[A-Za-z]{3,}[^()]*)\)$")
_NUMBER_IN_PROSE = re.compile(r"\$[^$]+\$|-?\d[\d,]*(?:\.\d+)?")
_MATHLIKE = re.compile(r"[\d\\^=<>(\[{]|^\s*[A-Za-z]\s*$")


def _math_span(text: str, pos: int) -> tuple[int, str] | None:
    """The math delimited at ``pos`` (after spaces): ``$$…$$`` and ``\\[…\\]`` may span lines, ``$…$`` and
    ``\\(…\\)`` may not (as math-verify); (start, content) or None."""
    m = re.compile(r"\s*").match(text, pos)
    i = m.end()
    for open_, close in _MATH_OPEN.items():
        if text.startswith(open_, i) and not text.startswith("\\$", i - 1 if i else 0):
            j = text.find(close, i + len(open_))
            while close == "$" and j > 0 and text[j - 1] == "\\":  # an escaped \$ inside does not close it
                j = text.find(close, j + 1)
            if j < 0 or (len(open_) == 1 or open_ == "\\(") and "\n" in text[i:j]:
                return None
            return i, text[i + len(open_):j]
    return None


def _anchored(text: str, m: re.Match) -> tuple[int, str, bool] | None:
    """The answer after an "answer is" anchor, and whether it was read out of prose: a delimited math span, else
    its sentence; a trailing parenthetical note goes ("7 (because 3+4)"), and a prose sentence ("The volume of $V$
    is 120") gives what follows its last "is", or its only number."""
    span = _math_span(text, m.end())
    if span is not None:
        return (*span, False)
    s = _UNTIL_SENTENCE_END.match(text, m.end())
    if not s:
        return None
    ans, prose = s.group(1), False
    note = _PAREN_NOTE.match(ans)
    if note and note.group(1).strip():
        ans = note.group(1)
    if "answer" in m.group().lower() and not _math_then_unit(_clean(ans)):
        prose = True
        if " is " in ans:
            ans = ans.rsplit(" is ", 1)[1]
        else:
            nums = _NUMBER_IN_PROSE.findall(ans)
            if len(nums) == 1:
                ans = nums[0]
    elif not _ANSWER_START.match(ans) and "answer" not in m.group().lower():
        return None  # "the solution is to multiply…": not a stated answer
    return s.start(1), ans, prose


def extract_answer(text: str, multi: bool = False) -> str | None:
    """The stated final answer, or None; see the module docstring for the rules.

    ``multi``: the gold is a set, so a run of boxes (``\\boxed{1}, \\boxed{2} and \\boxed{3}``) is read as one
    answer ``1, 2, 3`` rather than its last box.
    """
    text = normalize_text(text)
    strong: list[tuple[int, int, str]] = []  # (position, rank, answer): boxes, #### marks, anchored math
    weak: list[tuple[int, int, str]] = []  # anchored prose ("the answer is Evelyn"): only when nothing else is
    runs = _box_runs(text)
    if runs:
        pos, contents = runs[-1]
        strong.append((pos, 2, ", ".join(contents) if multi and len(contents) > 1 else contents[-1]))
    found = list(_GSM8K.finditer(text))
    if found:
        strong.append((found[-1].start(), 1, found[-1].group(1)))
    for m in reversed(list(_ANSWER_IS.finditer(text))):  # from the last: the first stated value found is the last
        got = _anchored(text, m)
        if got is not None:
            # prose ("the answer is consistent with step 3") never outranks a box or a stated value
            is_strong = _MATHLIKE.search(got[1]) and not got[2]
            (strong if is_strong else weak).append((got[0], 0, got[1]))
            if is_strong:
                break
    for m in _IS_THE_ANSWER.finditer(text):
        strong.append((m.start(1), 0, m.group(1)))
    if strong or weak:
        return _clean(max(strong or weak)[2]) or None  # the last stated answer; a box beats an anchor at its place
    lines = [line for line in text.splitlines() if line.strip()]
    if lines:
        m = _LAST_LINE_EQ.search(lines[-1])
        if m and _ANSWER_START.match(m.group(1)) and _math_then_unit(m.group(1)):
            return _clean(m.group(1)) or None
        if _as_fraction(_clean(text)) is not None:  # the whole response is one number: that is its answer
            return _clean(text)
    return None


def _math_then_unit(s: str) -> bool:
    """An expression, optionally followed by one unit word: "81", "3y", "12 apples", not "5 is what we get"."""
    words = re.findall(r"[A-Za-z]{2,}", re.sub(r"\\[A-Za-z]+", " ", s))
    return not words or (len(words) == 1 and re.search(rf"{words[0]}\W*$", s) is not None)


def _clean(s: str) -> str:
    """Strip markup that never changes an answer's value: $, \\( \\), **, \\$, spacing commands, trailing dots,
    thousands commas."""
    s = re.sub(r'^(?:\\?"|``)\s*(.*?)\s*(?:\\?"|\'\')$', r"\1", s.strip(), flags=re.DOTALL)  # "quoted" answer
    s = re.sub(r"^\\\(|\\\)$|^\\\[|\\\]$", "", s).strip()
    s = s.replace("\\$", "").replace("$", "").replace("**", "").replace("\\displaystyle", "")
    s = re.sub(r"(?<=\d)(?:,\\[!,]|\{,\}|\\[!,])\s*(?=\d{3}(?!\d))", "", s)  # MATH's 11,\! 111 and 1{,}000
    s = re.sub(r"\\[,;!: ]|~", " ", s)
    if _THOUSANDS.match(s):  # 1,000 and 1,000.5 apples; not (12,102) or 1,234,5
        s = re.sub(r"(?<=\d),(?=\d{3}(?!\d))", "", s)
    return s.strip().rstrip(".").strip()


_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?(?![\d,])")


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


_FLEXIBLE = re.compile(r"-?[0-9][0-9,]*(?:\.[0-9]+)?|-?\.[0-9]+")


def extract_flexible(text: str) -> str | None:
    """lm-evaluation-harness's gsm8k "flexible-extract": the last number anywhere in the response, stated or
    not (its regex ``(-?[$0-9.,]{2,})|(-?[0-9]+)``, ``group_select=-1``, without the currency sign)."""
    nums = _FLEXIBLE.findall(normalize_text(text))
    return _clean(nums[-1].rstrip(".,")) or None if nums else None


def gold_answer(gold: str) -> str:
    """The gold's answer: a gold written as a solution (MATH's, with ``\\boxed{}``) gives its boxes, several
    joined as a set; any other gold is itself."""
    text = normalize_text(gold)
    runs = _box_runs(text)
    return ", ".join(runs[-1][1]) if runs else gold
