"""Check helpers shared by the questions: stored numbers, ratio and paired-difference checks, comparison text."""

from __future__ import annotations

from ptlens.stats.estimate import Estimate, finite_number
from ptlens.report.verdicts.criteria import (AS_HYPOTHESISED, CLEAR_UNDIRECTED, NO_CLEAR, NOT_MEASURED, REVERSED, STUDY,
                                             Check, Criteria, Evidence)




def ratio_check(name: str, metric: str, a_name: str, a: float | None, b_name: str, b: float | None, factor: float,
                direction: int = 0, hypothesis: str | None = None, note: str = "") -> Check:
    """Exact numbers of two stages: clear when b/a ≥ factor or ≤ 1/factor; ``direction`` +1 (−1): b > a (b < a) hypothesised."""
    rule = f"ratio {b_name}/{a_name} ≥ {factor:g} or ≤ 1/{factor:g}" + (f" ({note})" if note else "")
    a, b = finite_number(a), finite_number(b)
    if a is None or b is None or a <= 0 or b <= 0:
        ev = [Evidence(f"{metric} [{a_name}]", a), Evidence(f"{metric} [{b_name}]", b)]
        return Check(name, NOT_MEASURED, ev, hypothesis, rule)
    r = b / a
    ev = [Evidence(f"{metric} [{a_name}]", a), Evidence(f"{metric} [{b_name}]", b), Evidence(f"ratio {b_name}/{a_name}", r)]
    clear = r >= factor or r <= 1 / factor
    return Check(name, check_outcome(clear, 1 if r > 1 else -1, direction), ev, hypothesis, rule)


def check_outcome(clear: bool, sign: int, direction: int) -> str:
    if not clear:
        return NO_CLEAR
    if direction == 0:
        return CLEAR_UNDIRECTED
    return AS_HYPOTHESISED if sign == direction else REVERSED


def difference_check(name: str, metric: str, a_name: str, a_est: Estimate | None, b_name: str, b_est: Estimate | None,
                     diff: Estimate | None, criteria: Criteria, relative: bool, direction: int = 0,
                     hypothesis: str | None = None, p_adjusted: float | None = None, family: int = 1) -> Check:
    """B − A on one behaviour metric: the (Holm-adjusted) paired test rejects at α and |effect| ≥ the stated size.

    ``p_adjusted`` comes from :func:`holm` over the question's ``family`` checks; without it the raw p is used.
    """
    a_est, b_est, diff = Estimate.coerce(a_est), Estimate.coerce(b_est), Estimate.coerce(diff)
    av, bv = a_est and a_est.value, b_est and b_est.value
    size = criteria.relative_effect * abs(av) if relative and av is not None else criteria.share_effect
    size_txt = f"{criteria.relative_effect:.0%} of {a_name}'s value" if relative else f"{criteria.share_effect:g}"
    ev = [Evidence(f"{metric} [{a_name}]", av, a_est and a_est.interval),
          Evidence(f"{metric} [{b_name}]", bv, b_est and b_est.interval)]
    if av is None or bv is None:
        return Check(name, NOT_MEASURED, ev, hypothesis, f"{metric} not in the stored results for both models")
    d, p = (diff.value, diff.p) if diff else (None, None)
    rule = (f"paired sign-flip test of {b_name} − {a_name}, Holm-adjusted over {family} check{'s' if family != 1 else ''}, "
            f"p ≤ {criteria.alpha:g} and |difference| ≥ {size_txt}")
    if d is None or p is None:
        if d is not None:
            ev.append(Evidence(f"{metric}: {b_name} − {a_name} (paired)", d, diff.interval))
        return Check(name, NOT_MEASURED, ev, hypothesis,
                     "no paired test stored for this pair (results of an older ptlens, or no behavior/samples.jsonl to "
                     "recompute it from): rerun ptlens behavior or rebuild the report beside its samples")
    padj = p if p_adjusted is None else p_adjusted
    ev += [Evidence(f"{metric}: {b_name} − {a_name} (paired)", d, diff.interval),
           Evidence("p (sign-flip, two-sided)", p), Evidence("p (Holm-adjusted)", padj)]
    clear = padj <= criteria.alpha and abs(d) >= size
    return Check(name, check_outcome(clear, 1 if d > 0 else -1, direction), ev, hypothesis, rule, p, padj)


def comparison_text(a: str, b: str, hypotheses: bool) -> str:
    if hypotheses:
        return f"SFT: {a} vs RLVR: {b}"
    return (f"{a} vs {b} (the lineage has no SFT → RLVR pair, so {STUDY} are not tested; "
            "differences are reported without direction)")
