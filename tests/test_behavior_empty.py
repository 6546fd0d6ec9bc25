"""Empty (0-token) and truncated responses, and a model whose every response is empty, go through every
behaviour metric and figure (a model that stops at once used to crash the entropy histogram)."""

from __future__ import annotations

import warnings

import matplotlib
import pytest

matplotlib.use("Agg")

from ptlens.behavior.figures import write_figures  # noqa: E402
from ptlens.behavior.metrics import compare_models  # noqa: E402
from ptlens.behavior.samples import problem_samples  # noqa: E402
from ptlens.results.store import SampleRecord  # noqa: E402

NAMES = ("mixed", "silent", "long")
PROBLEMS = ("p1", "p2", "p3")


def _record(model: str, pid: str, s: int, tokens: int, correct: bool, truncated: bool) -> SampleRecord:
    """A scored sample: entropy 0.5 and log-prob −0.3 nats per token; an empty one has no means (None)."""
    return SampleRecord(model=model, label=model, problem_id=pid, sample=s, prompt="q", response="x=4" * (tokens > 0),
                        gold="4", extracted="4" if correct else None, answer_key="4" if correct else "",
                        correct=correct, tokens=tokens, truncated=truncated, finish="length" if truncated else "stop",
                        seed=s, token_ids=list(range(tokens)), logprob_sum=-0.3 * tokens,
                        mean_logprob=-0.3 if tokens else None, entropy_sum=0.5 * tokens,
                        mean_entropy=0.5 if tokens else None)


@pytest.fixture(scope="module")
def planted():
    recs = []
    for pid in PROBLEMS:
        for s in range(4):
            # mixed: one empty, two correct, one truncated; silent: every response empty; long: every one truncated
            recs.append(_record("mixed", pid, s, 0 if s == 0 else 5, s > 1, truncated=s == 3))
            recs.append(_record("silent", pid, s, 0, False, truncated=False))
            recs.append(_record("long", pid, s, 8, False, truncated=True))
    for r in recs:
        r.cross_logprobs = {o: {"logprob_sum": -0.2 * r.tokens, "tokens": r.tokens, "mean_logprob": -0.2,
                                "kl_sum": 0.1 * r.tokens, "kl_inf_tokens": 0} for o in NAMES if o != r.model}
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no 0/0 on the way
        results = compare_models(problem_samples(recs, NAMES, PROBLEMS), n_boot=50)
    return recs, results


def test_metrics_of_empty_and_truncated_responses(planted):
    _, res = planted
    mixed, silent, long = (res["models"][n]["metrics"] for n in NAMES)
    assert mixed["accuracy"]["value"] == pytest.approx(0.5)
    assert mixed["length_mean"]["value"] == pytest.approx(15 / 4)  # the empty response counts as 0 tokens
    assert mixed["truncated"]["value"] == pytest.approx(0.25)
    assert mixed["token_entropy"]["value"] == pytest.approx(0.5)  # per token: the empty response adds nothing
    assert long["truncated"]["value"] == 1.0 and long["length_median"]["value"] == 8
    # a model with no token at all: per-token metrics are undefined (None), counts are 0
    assert silent["accuracy"]["value"] == 0.0 and silent["length_mean"]["value"] == 0.0
    assert silent["token_entropy"]["value"] is None and silent["mean_logprob"]["value"] is None
    assert res["cross_ppl"]["silent"]["mixed"]["value"] is None
    assert res["cross_ppl"]["mixed"]["silent"]["value"] == pytest.approx(1.2214, abs=1e-4)  # exp(0.2)
    acc = next(d for d in res["consecutive"] if d["b"] == "silent")["difference"]["accuracy"]
    assert acc["value"] == pytest.approx(-0.5)


def test_every_figure_is_drawn(planted, tmp_path):
    recs, res = planted
    paths = write_figures(res, recs, tmp_path)
    assert len(paths) == 5 and all(p.stat().st_size > 10_000 for p in paths)


def test_entropy_panel_names_the_empty_responses(planted, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from ptlens.behavior import figures as BF

    recs, _ = planted
    seen = []
    monkeypatch.setattr(BF, "save_png", lambda fig, path, **kw: seen.append(fig) or path)
    BF.distributions_figure(recs, NAMES, tmp_path / "d.png")
    ent_ax = seen[0].axes[0]
    labels = [t.get_text() for t in ent_ax.get_legend().get_texts()]
    assert labels == ["mixed (3 empty left out)", "silent (all 12 empty)", "long"]
    plt.close(seen[0])
    seen.clear()
    BF.distributions_figure([r for r in recs if r.model == "silent"], ["silent"], tmp_path / "d.png")
    assert "no response has a token" in " ".join(t.get_text() for t in seen[0].axes[0].texts)
    plt.close(seen[0])
