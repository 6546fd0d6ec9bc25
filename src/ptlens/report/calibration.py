"""How often the behaviour verdict errs: the design (power, family-wise error) and null simulations.

:func:`design` is what the report's methods section prints for the run's problems × samples:
the family-wise error rate the decision rule controls, the fewest problems it accepts, and the
power to detect a stated accuracy gain, from a normal approximation of the paired sign-flip test
(analytic, so the report costs nothing; :func:`simulate` checks it).

:func:`simulate` draws two models' graded samples from stated distributions and runs them
through the real pipeline the report uses — :class:`SampleRecord` → ``problem_samples`` →
``compare_models`` → results dict → :func:`reasoning_behaviour` — so its false-alarm rate (both
models from one distribution) and power (a planted accuracy gain) are those of the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ptlens.report.pairs import VERDICT_METRICS
from ptlens.report.verdicts import (AS_HYPOTHESISED, BEHAVIOUR_CHECKS, CLEAR, CLEAR_UNDIRECTED, REVERSED, UNEXPECTED,
                                    Criteria, Verdict, reasoning_behaviour)
from ptlens.results.store import BehaviorResults
from ptlens.stats.bounds import normal_cdf, normal_upper_quantile
from ptlens.stats.multiple import rejectable_from

N_CHECKS = len(BEHAVIOUR_CHECKS)


def min_problems_for(alpha: float = 0.05, n_checks: int = N_CHECKS) -> int:
    """Fewest problems at which the exact test can reject at Holm's first threshold α/m at all."""
    return rejectable_from(alpha, n_checks)


@dataclass(frozen=True)
class Design:
    n_problems: int
    n_samples: int
    alpha: float
    n_checks: int
    min_problems: int
    effect: float
    """Accuracy gain (absolute) whose power is stated."""
    accuracy_variance: float
    """Mean over problems of p(1 − p), the within-problem Bernoulli variance (from the run, or Beta(2, 2): 0.2)."""
    power: float
    method: str

    def text(self) -> str:
        if self.n_problems < self.min_problems:
            return (f"Design: {self.n_problems} problems × {self.n_samples} samples is below the minimum of "
                    f"{self.min_problems} problems; no behaviour verdict is given.")
        return (f"Design: {self.n_problems} problems × {self.n_samples} samples; family-wise error of the behaviour "
                f"verdict ≤ {self.alpha:g} over its {self.n_checks} checks (Holm); power to detect an accuracy gain of "
                f"+{self.effect:g} ≈ {self.power:.0%} ({self.method}).")


def design(n_problems: int, n_samples: int, effect: float = 0.10, criteria: Criteria = Criteria(),
           n_checks: int = N_CHECKS, accuracy_variance: float | None = None) -> Design:
    """Power of the accuracy check at this size, by a normal approximation of the sign-flip test.

    Per problem the paired difference d of the two models' accuracies has variance
    σ² ≈ 2·v/n (v = mean p(1 − p), n samples); the test's null spread is √(mean d² / P), so it
    rejects at Holm's strictest level α/m (the case where only accuracy differs) when the mean
    difference exceeds z_{1−α/2m}·√((σ² + δ²)/P), and the check also needs it to exceed the stated
    size. Power = 1 − Φ((max(threshold, size) − δ)/(σ/√P)).
    """
    v = 0.2 if accuracy_variance is None else float(accuracy_variance)
    mp = max(criteria.min_problems, min_problems_for(criteria.alpha, n_checks))
    if n_problems < 1 or n_samples < 1:
        return Design(n_problems, n_samples, criteria.alpha, n_checks, mp, effect, v, 0.0, "no problems")
    sigma2 = 2.0 * v / n_samples
    z = normal_upper_quantile(criteria.alpha / (2 * n_checks))
    thr = max(z * math.sqrt((sigma2 + effect ** 2) / n_problems), criteria.share_effect)
    se = math.sqrt(sigma2 / n_problems) if sigma2 > 0 else 1e-12
    power = 1.0 - normal_cdf((thr - effect) / se) if n_problems >= mp else 0.0
    how = "normal approximation of the paired sign-flip test at Holm's strictest level α/m, " + \
        ("with the run's per-problem accuracy spread" if accuracy_variance is not None else
         "assuming per-problem accuracies spread as Beta(2, 2)")
    return Design(n_problems, n_samples, criteria.alpha, n_checks, mp, effect, v, float(power), how)


def problems_for_power(effect: float, n_samples: int | None, target: float = 0.80, criteria: Criteria = Criteria(),
                       accuracy_variance: float | None = None, most: int = 1_000_000) -> int | None:
    """Fewest problems at which :func:`design` reaches ``target`` power for an accuracy gain of ``effect`` with
    ``n_samples`` per problem; None when no size up to ``most`` does (an effect below the check's stated size)."""
    if not n_samples or n_samples < 1 or effect <= 0:
        return None
    power = lambda p: design(p, n_samples, effect, criteria, accuracy_variance=accuracy_variance).power  # noqa: E731
    if power(most) < target:
        return None
    lo, hi = 1, most
    while lo < hi:
        mid = (lo + hi) // 2
        if power(mid) >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def design_of(results: BehaviorResults | dict | None, model: str | None = None, effect: float = 0.10,
              criteria: Criteria = Criteria()) -> Design | None:
    """:func:`design` at a behaviour run's size, with the per-problem accuracy spread of ``model`` (the first)."""
    results = BehaviorResults.coerce(results)
    if not results or not results.names:
        return None
    name = model or results.names[0]
    per = results.per_problem(name)
    stats = results.models.get(name)
    n_prob = (stats and stats.n_problems) or len(per)
    n_s = (results.settings or {}).get("n_samples")
    if not isinstance(n_s, int):
        n_s = int(round(((stats and stats.n_samples) or 0) / max(n_prob, 1)))
    v = None
    rows = [(r.correct, r.n) for r in per if r.n > 1]
    if rows:
        v = float(np.mean([c * (n - c) / (n * (n - 1)) for c, n in rows]))
    return design(int(n_prob or 0), int(n_s or 0), effect, criteria, accuracy_variance=v)


# ---------------------------------------------------------------- null and power simulations

WORDS = [f"w{i}" for i in range(40)]


def simulate_records(rng: np.random.Generator, n_problems: int, n_samples: int, effect: float = 0.0,
                     names: tuple[str, str] = ("sft", "rlvr")):
    """Graded sample records of two models on the same problems.

    Per problem (shared by both models): accuracy p ~ Beta(2, 2) (× (1 − effect), and the second
    model gets p + effect), a pool of three wrong answers with Dirichlet(1, 1, 1) weights, mean
    length ~ Gamma(4, 50) tokens, mean token entropy ~ Gamma(4, 0.1) nats and a word distribution.
    Per sample: correct ~ Bernoulli(p); a wrong sample gives no answer with probability 0.05, else a
    pooled wrong answer; length 1 + Poisson(mean); text: 2 to 10 words from the problem's words (short, to keep distinct-n cheap).
    With ``effect`` 0 both models draw from one distribution: any clear difference is a false alarm.
    """
    from ptlens.results.store import SampleRecord

    p = rng.beta(2.0, 2.0, n_problems) * (1.0 - effect)
    wrong = rng.dirichlet(np.ones(3), n_problems)
    mu = rng.gamma(4.0, 50.0, n_problems)
    ent = rng.gamma(4.0, 0.1, n_problems)
    word_p = rng.dirichlet(np.full(len(WORDS), 0.3), n_problems)
    recs = []
    for m, name in enumerate(names):
        pm = p + (effect if m == 1 else 0.0)
        ok = rng.random((n_problems, n_samples)) < pm[:, None]
        none = rng.random((n_problems, n_samples)) < 0.05
        lengths = 1 + rng.poisson(mu[:, None], (n_problems, n_samples))
        ents = lengths * rng.gamma(20.0, ent[:, None] / 20.0, (n_problems, n_samples))
        ok_l, none_l, len_l, ent_l = ok.tolist(), none.tolist(), lengths.tolist(), ents.tolist()
        for i in range(n_problems):
            picks = rng.choice(3, n_samples, p=wrong[i]).tolist()
            nwords = np.minimum(lengths[i] // 20, 8) + 2
            flat = [WORDS[t] for t in rng.choice(len(WORDS), int(nwords.sum()), p=word_p[i]).tolist()]
            ends = np.cumsum(nwords).tolist()
            for s in range(n_samples):
                text = " ".join(flat[ends[s] - int(nwords[s]):ends[s]])
                key = "42" if ok_l[i][s] else ("" if none_l[i][s] else str(7 + picks[s]))
                recs.append(SampleRecord(
                    model=name, label=name, problem_id=f"p{i}", sample=s, prompt="", response=text,
                    gold="42", extracted=key or None, answer_key=key, correct=ok_l[i][s], tokens=len_l[i][s],
                    truncated=False, finish="eos", seed=0, token_ids=[], logprob_sum=-0.8 * ent_l[i][s],
                    entropy_sum=ent_l[i][s]))
    return recs


def simulate_verdict(rng: np.random.Generator, n_problems: int, n_samples: int, effect: float = 0.0,
                     criteria: Criteria = Criteria(), n_boot: int = 20, n_perm: int = 1000) -> Verdict:
    """One replicate through the real pipeline: records → problem_samples → compare_models → verdict.

    The verdict decides on the sign-flip test and point values only, so ``n_boot`` (descriptive
    intervals) does not change it; ``n_perm`` random patterns keep the test exact (p = (1 + b)/(1 + N))
    and only its power depends on N. ks = (1, n) and ``only`` (the verdict's metrics) skip maj@k and
    distinct-1..3, which the verdict does not read.
    """
    from ptlens.behavior.metrics import compare_models
    from ptlens.behavior.samples import problem_samples

    names = ("sft", "rlvr")
    recs = simulate_records(rng, n_problems, n_samples, effect, names)
    ids = [f"p{i}" for i in range(n_problems)]
    metrics = compare_models(problem_samples(recs, names, ids), ks=sorted({1, n_samples}), n_boot=n_boot,
                             seed=int(rng.integers(2 ** 31)), n_perm=n_perm, only=VERDICT_METRICS)
    results = {"settings": {"n_samples": n_samples},
               "lineage": {"checkpoints": [{"label": n, "name": n} for n in names]}, **metrics}
    return reasoning_behaviour(results, criteria)


def false_alarm(v: Verdict) -> bool:
    """A wrong "clear difference" or "unexpected" when both models come from one distribution."""
    return v.label in (CLEAR, UNEXPECTED)


def accuracy_found(v: Verdict) -> bool:
    return any(c.name.startswith("Accuracy") and c.outcome in (CLEAR_UNDIRECTED, AS_HYPOTHESISED, REVERSED)
               for c in v.checks)


def simulate(n_problems: int, n_samples: int, replicates: int, effect: float = 0.0, seed: int = 0,
             criteria: Criteria = Criteria(), n_perm: int = 1000) -> dict:
    """Rates over seeded replicates: false alarms (effect 0) or accuracy gains found (effect > 0)."""
    rng = np.random.default_rng([seed, n_problems, n_samples, int(round(effect * 1000))])
    alarms = found = 0
    for _ in range(replicates):
        v = simulate_verdict(rng, n_problems, n_samples, effect, criteria, n_perm=n_perm)
        alarms += false_alarm(v)
        found += accuracy_found(v)
    return {"problems": n_problems, "samples": n_samples, "effect": effect, "replicates": replicates,
            "false_alarm": alarms / replicates, "accuracy_found": found / replicates,
            "design_power": design(n_problems, n_samples, effect or 0.10, criteria,
                                   accuracy_variance=(1 - effect) / 2 - 0.3 * (1 - effect) ** 2).power}
