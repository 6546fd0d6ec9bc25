"""cross_kl is a KL: the per-token KL of the sampling distributions, summed along A's responses, estimates the
exact sequence KL, which a five-token toy lets us compute by enumerating every response."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from ptlens.behavior import metrics as M
from ptlens.behavior.hf_model import HFModel, KLReference
from ptlens.behavior.nucleus import sampled_token_scores, sampling_logprobs, token_kl
from ptlens.behavior.prompts import load_tokenizer
from ptlens.behavior.sampling import SamplingSettings
from ptlens.behavior.toy import TINY_VOCAB, make_tiny_vocab_model

torch.set_num_threads(1)

EOS = 1
MAX_LEN = 3
PROMPT_A = [0]          # "<s>"
PROMPT_B = [0, 2, 3]    # B is asked differently: each model conditions on its own prompt


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    root = tmp_path_factory.mktemp("kl_toys")
    paths = [make_tiny_vocab_model(root / f"m{s}", seed=s) for s in (0, 1)]
    tok = load_tokenizer(paths[0], "m0")
    a, b = (HFModel(p, tok, device="cpu", dtype="float64") for p in paths)
    yield a, b
    a.close()
    b.close()


# ---------------------------------------------------------------- an independent reference in numpy


def _next_logits(model: HFModel, prompt: list[int], prefix: tuple[int, ...]) -> np.ndarray:
    with torch.no_grad():
        return model.model(torch.tensor([prompt + list(prefix)])).logits[0, -1].double().numpy()


def _nucleus(logits: np.ndarray, temperature: float, top_p: float) -> np.ndarray:
    """Nucleus sampling as Holtzman et al. define it: the smallest most-probable set with mass ≥ top_p."""
    p = np.exp(logits / temperature - np.max(logits / temperature))
    p /= p.sum()
    order = np.argsort(-p, kind="stable")
    before = np.concatenate([[0.0], np.cumsum(p[order])[:-1]])
    keep = np.zeros_like(p, dtype=bool)
    keep[order[before < top_p]] = True
    out = np.where(keep, p, 0.0)
    return out / out.sum()


def _smoothed(logits: np.ndarray, temperature: float, top_p: float, eps: float) -> np.ndarray:
    full = np.exp(logits / temperature - np.max(logits / temperature))
    return (1 - eps) * _nucleus(logits, temperature, top_p) + eps * full / full.sum()


def _responses() -> list[tuple[int, ...]]:
    """Every response the toy can give: ends with </s> or at MAX_LEN tokens."""
    out = []
    for n in range(1, MAX_LEN + 1):
        for seq in itertools.product(range(len(TINY_VOCAB)), repeat=n):
            if EOS not in seq[:-1] and (seq[-1] == EOS or n == MAX_LEN):
                out.append(seq)
    return out


def _enumerate(a: HFModel, b: HFModel, temperature: float, top_p: float, eps: float):
    """(responses, P_A of each, exact sequence KL(P_A ‖ Q_B), expected number of infinite-KL positions)."""
    cache = {}

    def dists(prefix):
        if prefix not in cache:
            la, lb = _next_logits(a, PROMPT_A, prefix), _next_logits(b, PROMPT_B, prefix)
            cache[prefix] = (_nucleus(la, temperature, top_p), _smoothed(lb, temperature, top_p, eps),
                             _nucleus(lb, temperature, top_p))
        return cache[prefix]

    seqs = _responses()
    probs, kl, inf = [], 0.0, 0.0
    for seq in seqs:
        pa = qb = 1.0
        mismatches = 0
        for t, tok in enumerate(seq):
            da, db, nb = dists(seq[:t])
            mismatch = bool(np.any((da > 0) & (nb == 0)))  # the exact KL is infinite here: B is smoothed
            pa *= da[tok]
            qb *= db[tok] if mismatch else nb[tok]
            mismatches += mismatch
        probs.append(pa)
        if pa > 0:
            kl += pa * math.log(pa / qb)
            inf += pa * mismatches
    assert sum(probs) == pytest.approx(1.0, abs=1e-12)
    return seqs, np.array(probs), kl, inf


# ---------------------------------------------------------------- the checks

SETTINGS = [(0.6, 0.95, 1e-3), (1.0, 1.0, 1e-3), (0.6, 0.8, 1e-2), (1.3, 0.9, 1e-3)]


@pytest.mark.parametrize("temperature,top_p,eps", SETTINGS)
def test_expected_kl_sum_equals_the_enumerated_sequence_kl(toys, temperature, top_p, eps):
    """Σ_x P_A(x)·kl_sum(x) — the exact expectation of the per-response estimate over all prefixes — is the
    sequence KL computed by enumeration, to 1e-6; likewise the expected count of infinite-KL positions."""
    a, b = toys
    seqs, probs, exact, inf = _enumerate(a, b, temperature, top_p, eps)
    settings = SamplingSettings(temperature, top_p, MAX_LEN)
    scores = b.score([(PROMPT_B, list(x)) for x in seqs], KLReference(a, [PROMPT_A] * len(seqs), settings, eps))
    kl_sums = np.array([s.kl_sum for s in scores])
    assert exact > 0.05  # the toys differ: the check is not 0 = 0
    assert float(probs @ kl_sums) == pytest.approx(exact, abs=1e-6)
    assert float(probs @ np.array([s.kl_inf_tokens for s in scores])) == pytest.approx(inf, abs=1e-9)
    assert (kl_sums >= 0).all()
    if top_p < 1:
        assert inf > 0.01  # top-p cut some of A's tokens from B's nucleus: the smoothing is exercised
    else:
        assert inf == 0


def test_monte_carlo_estimate_from_generated_samples(toys):
    """Responses drawn by HFModel.generate (transformers' sampler) give the exact KL within 4 standard errors:
    scoring uses the distribution sampling used."""
    a, b = toys
    temperature, top_p, eps = 0.6, 0.9, 1e-3
    _, _, exact, _ = _enumerate(a, b, temperature, top_p, eps)
    settings = SamplingSettings(temperature, top_p, MAX_LEN)
    gens = a.generate([PROMPT_A] * 3000, (), settings, seed=7)
    scores = b.score([(PROMPT_B, g.token_ids) for g in gens], KLReference(a, [PROMPT_A] * len(gens), settings, eps))
    x = np.array([s.kl_sum for s in scores])
    se = x.std(ddof=1) / math.sqrt(len(x))
    assert abs(x.mean() - exact) < 4 * se, (x.mean(), exact, se)
    assert se < 0.1 * exact


def test_self_kl_is_zero_and_the_old_estimate_could_be_negative(toys):
    a, b = toys
    settings = SamplingSettings(0.6, 0.95, MAX_LEN)
    gens = a.generate([PROMPT_A] * 200, (), settings, seed=3)
    pairs = [(PROMPT_A, g.token_ids) for g in gens]
    self_scores = a.score(pairs, KLReference(a, [PROMPT_A] * len(pairs), settings))
    assert max(abs(s.kl_sum) for s in self_scores) < 1e-12 and all(s.kl_inf_tokens == 0 for s in self_scores)
    # the old cross_kl (Σ log p_A − log p_B of the sampled tokens at temperature 1) is not a KL: per response it
    # goes negative; the new one never does
    cross = b.score([(PROMPT_B, g.token_ids) for g in gens], KLReference(a, [PROMPT_A] * len(gens), settings))
    old = np.array([s.logprob_sum for s in self_scores]) - np.array([c.logprob_sum for c in cross])
    assert (old < 0).any() and all(c.kl_sum >= 0 for c in cross)


def test_token_kl_edge_cases():
    torch.manual_seed(0)
    lp, lq = torch.randn(50, 7, dtype=torch.float64) * 3, torch.randn(50, 7, dtype=torch.float64) * 3
    kl, inf = token_kl(lp, lq, 0.7, 0.9)
    assert (kl >= 0).all() and inf.any() and not inf.all()
    # top-p 1: smoothing changes nothing, it is the plain KL of tempered softmaxes
    kl1, inf1 = token_kl(lp, lq, 0.7, 1.0, smoothing=0.2)
    pa, pb = torch.softmax(lp / 0.7, -1), torch.softmax(lq / 0.7, -1)
    assert torch.allclose(kl1, (pa * (pa.log() - pb.log())).sum(-1)) and not inf1.any()
    # greedy: point masses; 0 where the argmaxes agree, else −log(ε·softmax(l_B)[argmax_A]) and flagged
    klg, infg = token_kl(lp, lq, 0.0, 0.95, smoothing=1e-3)
    ia, ib = lp.argmax(-1), lq.argmax(-1)
    want = torch.where(ia == ib, 0.0, -(1e-3 * torch.softmax(lq, -1).gather(1, ia[:, None])[:, 0]).log())
    assert torch.allclose(klg, want) and torch.equal(infg, ia != ib) and infg.any() and not infg.all()
    # a vocabulary with fewer rows gives the extra tokens zero probability, hence infinite unsmoothed KL
    kl_pad, inf_pad = token_kl(lp, lq[:, :6], 1.0, 1.0)
    assert torch.all(inf_pad) and (kl_pad > 0).all()
    # the transform is the one generate() applies
    sp = sampling_logprobs(lp, 0.7, 0.9).exp()
    ref = torch.tensor(np.stack([_nucleus(row.numpy(), 0.7, 0.9) for row in lp]))
    assert torch.allclose(sp, ref)


def test_cross_kl_statistics_and_results_fields():
    assert M.cross_kl([0.5, 1.5], [2, 2]) == pytest.approx(0.5)

    def problem(pid, kls, infs):
        n = len(kls)
        p = M.ProblemSamples(pid, [True] * n, ["1"] * n, ["x"] * n, [4] * n, [False] * n, [-4.0] * n, [2.0] * n)
        p.cross = {"b" if pid.startswith("a") else "a": ([-6.0] * n, [4] * n)}
        p.cross_kl = {"b" if pid.startswith("a") else "a": (list(kls), list(infs))}
        return p

    a = [problem(f"a{i}", [0.4, 0.8], [1, 0]) for i in range(3)]
    b = [problem(f"a{i}", [0.1, 0.1], [0, 0]) for i in range(3)]
    for p in b:
        p.cross, p.cross_kl = {"a": p.cross["b"]}, {"a": p.cross_kl["b"]}
    res = M.compare_models({"a": a, "b": b}, ks=[1], n_boot=50)
    assert res["cross_kl"]["a"]["b"]["value"] == pytest.approx(1.2 / 8)
    assert res["cross_kl"]["b"]["a"]["value"] == pytest.approx(0.2 / 8)
    assert res["cross_kl_inf_share"]["a"]["b"]["value"] == pytest.approx(1 / 8)
    assert res["cross_kl"]["a"]["a"]["value"] == 0.0
    assert res["cross_ppl"]["a"]["b"]["value"] == pytest.approx(math.exp(6 / 4))
    for p in a:  # without KL sums (other vocabulary, old journal) cross_kl is left out, cross_ppl stays
        p.cross_kl = {}
    res = M.compare_models({"a": a, "b": b}, ks=[1], n_boot=50)
    assert "b" not in res["cross_kl"]["a"] and "b" in res["cross_ppl"]["a"]


def _toy_lineage(root, digit_bias: float, biases, noise: float, n_problems: int):
    """Toy chat models that like digits (plus each one's own biases) and ``n_problems`` one-line sums."""
    import json

    from ptlens.behavior.toy import make_toy_model

    specs = []
    for i, bias in enumerate(biases):
        make_toy_model(root / f"m{i}", seed=i, logit_bias={**{c: digit_bias for c in "0123456789"}, **bias}, noise=noise)
        specs.append(f"m{i}={root / f'm{i}'}")
    problems = root / "p.jsonl"
    problems.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 2?", "answer": str(i + 2)}) + "\n"
                                for i in range(n_problems)))
    return specs, problems


def test_behavior_run_stores_the_kl_of_each_response(tmp_path):
    """In a real run, each stored kl_sum is the KL along that response between the two models' sampling
    distributions, each model on its own prompt; results hold cross_kl and cross_kl_inf_share both ways."""
    from transformers import AutoModelForCausalLM

    from ptlens.behavior.config import BehaviorConfig
    from ptlens.behavior.run import run_behavior
    from ptlens.results.store import load_samples
    from ptlens.resolve import resolve_lineage

    specs, problems = _toy_lineage(tmp_path, 3.0, ({"</s>": 1.0}, {"4": 4.0, "</s>": 3.5}), 0.3, 2)
    cfg = BehaviorConfig(problems=str(problems), n_samples=2, max_new_tokens=5, batch_size=4, n_boot=50, seed=1,
                         device="cpu", engine="hf", figures=False, temperature=0.7, top_p=0.9)
    res = run_behavior(resolve_lineage(models=specs), cfg, tmp_path / "out", progress=False).results
    samples = load_samples(tmp_path / "out")
    models = {n: AutoModelForCausalLM.from_pretrained(str(tmp_path / n), dtype=torch.float32).eval() for n in ("m0", "m1")}
    tok = load_tokenizer(tmp_path / "m0", "m0")
    for s in samples:
        other = "m1" if s.model == "m0" else "m0"
        ids = tok(s.prompt, add_special_tokens=False).input_ids  # both models share the template and instruction
        x = torch.tensor([ids + s.token_ids])
        with torch.no_grad():
            la, lb = (models[n](x).logits[0, len(ids) - 1:-1] for n in (s.model, other))
        kl, inf = token_kl(la, lb, 0.7, 0.9)
        assert s.cross_logprobs[other]["kl_sum"] == pytest.approx(float(kl.sum()), abs=1e-4)
        assert s.cross_logprobs[other]["kl_inf_tokens"] == int(inf.sum())
    for a, b in (("m0", "m1"), ("m1", "m0")):
        tokens = sum(s.tokens for s in samples if s.model == a)
        want = sum(s.cross_logprobs[b]["kl_sum"] for s in samples if s.model == a) / tokens
        assert res["cross_kl"][a][b]["value"] == pytest.approx(want) and want > 0
        assert 0 <= res["cross_kl_inf_share"][a][b]["value"] <= 1


def test_kept_nuclei_give_the_kl_of_the_reloaded_sampler(tmp_path, monkeypatch):
    """cross_kl from the nuclei each sampler kept while scoring itself equals cross_kl with the sampler reloaded
    and rerun (the path a resumed run takes); the kept nuclei are removed once every score is on disk."""
    from ptlens.behavior import hf_model
    from ptlens.behavior.config import BehaviorConfig
    from ptlens.behavior.journal import NUCLEI_DIR
    from ptlens.behavior.run import run_behavior
    from ptlens.results.store import load_samples
    from ptlens.resolve import resolve_lineage

    specs, problems = _toy_lineage(tmp_path, 2.0, ({"</s>": 1.0}, {"4": 3.0, "</s>": 2.5}, {"7": 3.0, "</s>": 2.0}),
                                   0.4, 3)
    cfg = BehaviorConfig(problems=str(problems), n_samples=3, max_new_tokens=6, batch_size=4, n_boot=20, seed=2,
                         device="cpu", engine="hf", figures=False, temperature=0.8, top_p=0.9)
    lineage = resolve_lineage(models=specs)
    run_behavior(lineage, cfg, tmp_path / "kept", progress=False)
    assert not (tmp_path / "kept" / "behavior" / NUCLEI_DIR).exists()
    monkeypatch.setattr(hf_model, "NUCLEUS_CACHE_WIDTH", -1)  # nothing kept: every cross_kl reloads its sampler
    run_behavior(lineage, cfg, tmp_path / "reloaded", progress=False)
    kept, reloaded = (load_samples(tmp_path / d) for d in ("kept", "reloaded"))
    assert [s.response for s in kept] == [s.response for s in reloaded]
    n = 0
    for a, b in zip(kept, reloaded):
        for other, v in a.cross_logprobs.items():
            if "kl_sum" in v and v["kl_sum"] is not None:
                assert v["kl_sum"] == pytest.approx(b.cross_logprobs[other]["kl_sum"], rel=1e-5, abs=1e-6)
                assert v["kl_inf_tokens"] == b.cross_logprobs[other]["kl_inf_tokens"]
                n += 1
    assert n == 2 * len(kept) and any(s.cross_logprobs[o]["kl_sum"] > 0.01 for s in kept for o in s.cross_logprobs)


if __name__ == "__main__":  # the table of docs/validation/kl.md: PYTHONPATH=src python3 tests/test_kl.py
    import tempfile

    root = tempfile.mkdtemp()
    tok = load_tokenizer(make_tiny_vocab_model(f"{root}/m0", seed=0), "m0")
    a, b = (HFModel(make_tiny_vocab_model(f"{root}/m{s}", seed=s), tok, "cpu", "float64") for s in (0, 1))
    for temperature, top_p, eps in SETTINGS:
        seqs, probs, exact, inf = _enumerate(a, b, temperature, top_p, eps)
        st = SamplingSettings(temperature, top_p, MAX_LEN)
        sc = b.score([(PROMPT_B, list(x)) for x in seqs], KLReference(a, [PROMPT_A] * len(seqs), st, eps))
        est = float(probs @ np.array([s.kl_sum for s in sc]))
        own = a.score([(PROMPT_A, list(x)) for x in seqs])
        old = float(probs @ (np.array([s.logprob_sum for s in own]) - np.array([s.logprob_sum for s in sc])))
        print(f"| {temperature} | {top_p} | {eps:g} | {(probs > 0).sum()} | {exact:.6f} | {est:.6f} | "
              f"{abs(est - exact):.0e} | {inf:.3f} | {old:.3f} |")


# ---------------------------------------------------------------- the Monte-Carlo estimator (engine scoring)


def _logprob_rows(model: HFModel, prompt: list[int], seq: tuple[int, ...]) -> np.ndarray:
    """Temperature-1 log-probs of the whole vocabulary at each position of ``seq``: what vLLM's prompt_logprobs
    returns when asked for the whole vocabulary."""
    with torch.no_grad():
        logits = model.model(torch.tensor([prompt + list(seq)])).logits[0, len(prompt) - 1:-1].double()
    return torch.log_softmax(logits, -1).numpy()


@pytest.mark.parametrize("temperature,top_p,eps", [(0.6, 0.95, 1e-3), (1.0, 1.0, 1e-3), (1.3, 0.9, 1e-3)])
def test_monte_carlo_log_ratio_expectation_by_enumeration(toys, temperature, top_p, eps):
    """The sampled-token log-ratio Σ_t log p̃_A(y_t) − log q_B(y_t), from the log-probs an engine gives
    (:func:`sampled_token_scores`), has expectation over A's responses KL(P̃_A ‖ Q'_B) by enumeration, Q'_B being
    B's sampling distribution smoothed at the tokens outside its nucleus only; at top-p 1 that is the exact
    sequence KL, and otherwise it lies within the smoothing's size per such token of the exact-path KL."""
    a, b = toys
    seqs, probs, exact, inf = _enumerate(a, b, temperature, top_p, eps)
    mc, want, outside = [], 0.0, []
    for seq in seqs:
        rows_a, rows_b = _logprob_rows(a, PROMPT_A, seq), _logprob_rows(b, PROMPT_B, seq)
        sa = sampled_token_scores(rows_a, list(seq), temperature, top_p, True, eps)
        sb = sampled_token_scores(rows_b, list(seq), temperature, top_p, True, eps)
        assert sa.logprob_sum == pytest.approx(float(rows_a[np.arange(len(seq)), list(seq)].sum()), abs=1e-12)
        assert sa.entropy_sum == pytest.approx(float(-(np.exp(rows_a) * rows_a).sum()), abs=1e-9)
        mc.append(sa.sampling_logprob_sum - sb.sampling_logprob_sum)
        outside.append(sb.outside_tokens)
        pa = qb = 1.0
        for t, tok in enumerate(seq):
            da, nb = _nucleus(rows_a[t], temperature, top_p), _nucleus(rows_b[t], temperature, top_p)
            pa *= da[tok]
            qb *= nb[tok] if nb[tok] > 0 else _smoothed(rows_b[t], temperature, top_p, eps)[tok]
        if pa > 0:
            want += pa * math.log(pa / qb)
            assert sa.outside_tokens == 0  # A's own tokens lie in A's nucleus
    assert float(probs @ np.array(mc)) == pytest.approx(want, abs=1e-9)
    if top_p == 1:
        assert want == pytest.approx(exact, abs=1e-9) and not any(outside)
    else:
        assert float(probs @ np.array(outside)) > 0  # tokens outside B's nucleus: the smoothing is exercised
        assert abs(want - exact) <= -math.log(1 - eps) * MAX_LEN + 1e-9


def test_sampled_token_scores_from_a_top_k():
    """Given only a top-K of the candidates (and the sampled token), the sampling log-prob is the one over the
    whole vocabulary when the tail is negligible; a token outside the nucleus is smoothed and counted."""
    full = torch.log_softmax(torch.tensor([[4.0, 3.5, 3.0, -40.0, -41.0, -42.0]], dtype=torch.float64), -1)
    want = sampling_logprobs(full, 0.6, 0.95)[0]
    top = full[:, :3].numpy()
    for tok in (0, 1):
        got = sampled_token_scores(top, [tok], 0.6, 0.95, False)
        assert got.sampling_logprob_sum == pytest.approx(float(want[tok]), abs=1e-9)
        assert (got.outside_tokens, got.complete, got.tokens) == (0, False, 1)
        assert got.logprob_sum == pytest.approx(float(full[0, tok]), abs=1e-12)
    far = sampled_token_scores(full.numpy(), [4], 0.6, 0.95, True)  # a token no nucleus holds
    assert far.outside_tokens == 1 and math.isfinite(far.sampling_logprob_sum)
    empty = sampled_token_scores(np.zeros((0, 3)), [], 0.6, 0.95, True)
    assert (empty.tokens, empty.logprob_sum, empty.sampling_logprob_sum) == (0, 0.0, 0.0)


def test_kl_standard_error_over_problems():
    """The delta-method standard error of a ratio over problems, against its formula worked by hand."""
    num, den = np.array([1.0, 2.0, 4.0]), np.array([10.0, 10.0, 20.0])
    r = 7.0 / 40.0
    want = math.sqrt(3 / 2 * ((1 - 10 * r) ** 2 + (2 - 10 * r) ** 2 + (4 - 20 * r) ** 2)) / 40.0
    assert M.ratio_standard_error(num, den) == pytest.approx(want, rel=1e-12)
    assert math.isnan(M.ratio_standard_error(num[:1], den[:1]))
