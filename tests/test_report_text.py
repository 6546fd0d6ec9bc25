"""Report wording: sentences that read, counts and levels computed from the settings, the mechanism's first layer."""

from __future__ import annotations

from ptlens.report.sections import interval_level
from ptlens.results.store import BehaviorResults
from ptlens.report.methods import behaviour_definitions
from ptlens.report.verdicts import Criteria, learning_dynamics
from ptlens.report.verdicts.criteria import N_BEHAVIOUR_CHECKS
from ptlens.stats.multiple import rejectable_from


def test_learning_dynamics_criterion_reads_as_one_sentence_per_rule():
    crit = learning_dynamics(None).criterion
    assert "or (magnitude" not in crit and ") or (" not in crit
    assert "beyond 1.5× either way (breadth" in crit and "Magnitude, raw or per unit of learning rate × steps, is shown " \
        "but descriptive: it has no null." in crit


def test_counts_and_levels_are_computed_not_written():
    text = " ".join(Criteria().text())
    assert "with 8 checks the exact test cannot reject at all below 9 problems" in text and "α/8 = 0.00625" in text
    strict = " ".join(Criteria(alpha=0.001).text())
    assert rejectable_from(0.001, N_BEHAVIOUR_CHECKS) == 14 and "below 14 problems" in strict and "α/8 = 0.000125" in strict
    assert rejectable_from(0.05, 1) == 6  # 2/2^6 ≤ 0.05 < 2/2^5
    assert "The 90% bootstrap intervals" in " ".join(Criteria(level=0.9).text())
    assert interval_level(BehaviorResults.from_dict({"bootstrap": {"level": 0.9}})) == "90%"
    assert interval_level(None) == "95%"
    intervals = dict(behaviour_definitions("90%"))["intervals"]
    assert intervals.startswith("Every headline number carries a 90% percentile bootstrap interval")


def test_mechanism_says_what_first_layer_embeddings_means():
    from ptlens.report.mechanism import mechanism_record

    layers = [{"transition": "a→b", "layer": L, "cka": 0.99, "act_rel_diff": d, "logit_lens_kl": k}
              for L, d, k in ((-1, 0.01, 0.0), (0, 0.02, 0.1), (1, 0.30, 0.5), (2, 0.10, 0.9))]
    t = mechanism_record({"layers": layers, "transplant": [], "transitions": ["a→b"]})["transitions"][0]
    assert t["first_layer"] == -1 and t["first_layer_text"] == "embeddings (table changed)"
    assert t["answer"].startswith("The embedding table changed, so activations differ from the first layer on; the "
                                  "relative activation change is largest at layer 1 (0.3), and the readout changes "
                                  "most at layer 2")
    assert "first move at the embeddings" not in t["answer"]


def test_numbers_print_alike_in_every_report():
    """report.html / report.md (report.sections.fmt) and weight_analysis_report.md (fmt_value) share one rule."""
    from ptlens.report.sections import fmt
    from ptlens.weights.report_md import fmt_value

    cases = {12345.6: "1.23e+04", 99999.0: "1.00e+05", 9999.4: "9999", 0.5: "0.5", 2.5e-4: "2.50e-04",
             -0.0123: "-0.0123", 1.5: "1.5"}
    for v, want in cases.items():
        assert fmt(v) == fmt_value(v) == want, v
    assert (fmt(0.0), fmt(1234), fmt(None), fmt(float("nan"))) == ("0", "1,234", "–", "–")
