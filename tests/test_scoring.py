"""Teacher-forced scoring with each prompt run once (``HFModel.score(share_prompts=True)``, the default) equals the
full prompt + response pass it replaces: per-position logits, log-prob and entropy sums, cross_kl against kept
nuclei and against a reloaded sampler with its own prompts, and the kept nuclei — on random tiny Llamas (unequal
prompts, empty and unequal responses, batches split by the token budget) and on the shipped lineage; and the full
pass still runs where sharing cannot apply (no repeated prompt, a sliding-window cache)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ptlens.behavior.hf_model import SPLIT_COST, HFModel, KLReference, response_groups
from ptlens.behavior.prompts import build_prompt, load_tokenizer, model_instruction, prompt_ids
from ptlens.behavior.sampling import SamplingSettings, derived_seed
from ptlens.behavior.problems import load_problems
from ptlens.behavior.toy import make_toy_model

torch.set_num_threads(1)

TINY = Path(__file__).resolve().parents[1] / "src" / "ptlens" / "data" / "tiny"
SETTINGS = SamplingSettings(temperature=0.8, top_p=0.95, max_new_tokens=16)
QUESTIONS = ("1+1?", "What is 12 + 30?", "Is 7 * 8 = 56? Say.")


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    """Two random chat Llamas (float64, so that the two paths differ by rounding only) and one tokenizer."""
    root = tmp_path_factory.mktemp("scoring")
    paths = [make_toy_model(root / n, seed=s, hidden=64, layers=2, noise=0.3) for s, n in enumerate("ab")]
    tok = load_tokenizer(paths[0], "a")
    return [HFModel(p, tok, "cpu", "float64") for p in paths], tok


def _pairs(tok, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Three prompts of unequal lengths, each with responses of lengths 0, 1, 2, 5, 9 (random tokens), shuffled."""
    g = torch.Generator().manual_seed(seed)
    prompts = [prompt_ids(tok, build_prompt(tok, q)) for q in QUESTIONS]
    assert len({len(p) for p in prompts}) == 3
    pairs = [(p, torch.randint(3, len(tok), (n,), generator=g).tolist()) for p in prompts for n in (0, 1, 2, 5, 9)]
    return [pairs[i] for i in torch.randperm(len(pairs), generator=g).tolist()]


def _assert_same(new, old, tol):
    assert len(new) == len(old)
    for x, y in zip(new, old):
        assert x.tokens == y.tokens and x.kl_inf_tokens == y.kl_inf_tokens
        for a, b in ((x.logprob_sum, y.logprob_sum), (x.entropy_sum, y.entropy_sum), (x.kl_sum, y.kl_sum)):
            assert (a is None) == (b is None)
            if a is not None:
                assert abs(a - b) <= tol * max(1.0, abs(b)), (a, b)
        assert (x.nucleus is None) == (y.nucleus is None)
        if x.nucleus is not None:
            assert torch.equal(x.nucleus.ids, y.nucleus.ids) and torch.equal(x.nucleus.offsets, y.nucleus.offsets)
            if x.nucleus.logp.numel():
                assert float((x.nucleus.logp - y.nucleus.logp).abs().max()) <= tol


def test_response_logits_equal_the_full_pass(toys):
    """Every position's logits, and the shared path really ran (3 distinct prompts for 15 pairs)."""
    (a, _), tok = toys
    pairs = _pairs(tok)
    with torch.inference_mode():
        shared = a._shared_prompt_logits(pairs)
        full = a._response_logits(pairs, share_prompts=False)
    assert shared is not None
    for (p, r), x, y in zip(pairs, shared, full):
        assert x.shape == y.shape == (len(r), a.vocab_size)
        if r:
            assert float((x - y).abs().max()) <= 1e-10
    # and the full pass is the model run on each sequence alone (no padding, no batch)
    with torch.inference_mode():
        for (p, r), x in zip(pairs, shared):
            if r:
                alone = a.model(input_ids=torch.tensor([p + r])).logits[0, len(p) - 1:-1]
                assert float((x - alone).abs().max()) <= 1e-10


@pytest.mark.parametrize("budget,split_cost", [(None, SPLIT_COST), (None, 0), (1, SPLIT_COST)])
def test_scores_kl_and_nuclei_equal_the_full_pass(toys, budget, split_cost):
    """log-prob, entropy, kept nuclei, KL against kept nuclei and against the reloaded sampler whose prompts
    differ from the scorer's (another instruction: other lengths) — shared path vs full pass; ``split_cost`` 0
    gives one forward pass per response length (copies of the prompt cache); ``budget`` 1 puts every pair in a
    batch of its own (the full pass then runs: nothing repeats). Neither may change anything."""
    (a, b), tok = toys
    pairs = _pairs(tok, seed=1)
    for m in (a, b):
        m.score_token_budget, m.split_cost = budget or (1 << 24), split_cost
    own_new = a.score(pairs, keep=SETTINGS)
    own_old = a.score(pairs, keep=SETTINGS, share_prompts=False)
    _assert_same(own_new, own_old, 1e-9)
    assert sum(s.nucleus.positions for s in own_new) == sum(len(r) for _, r in pairs)
    nuclei = KLReference(None, [], SETTINGS, nuclei=[s.nucleus for s in own_new])
    _assert_same(b.score(pairs, nuclei), b.score(pairs, nuclei, share_prompts=False), 1e-9)
    their = {tuple(prompt_ids(tok, build_prompt(tok, q))): prompt_ids(tok, build_prompt(tok, q, "Be brief."))
             for q in QUESTIONS}
    reload = KLReference(a, [their[tuple(p)] for p, _ in pairs], SETTINGS)
    new, old = b.score(pairs, reload), b.score(pairs, reload, share_prompts=False)
    _assert_same(new, old, 1e-9)
    assert sum(s.kl_sum for s in new) > 0.1  # two different models: the KL is not trivially 0
    # the reloaded sampler's KL with its own prompts equals the KL against the nuclei it keeps with those prompts
    kept = a.score([(their[tuple(p)], r) for p, r in pairs], keep=SETTINGS)
    _assert_same(b.score(pairs, KLReference(None, [], SETTINGS, nuclei=[s.nucleus for s in kept])), new, 1e-9)
    for m in (a, b):
        m.score_token_budget, m.split_cost = 1 << 24, SPLIT_COST


def test_response_groups_is_the_cheapest_split():
    """The dynamic programme's cut equals the cheapest of every contiguous split of the sorted rows (enumerated),
    keeps every row once, and ends at one pass when a pass costs more than any padding."""
    import itertools
    import random

    rng = random.Random(0)
    for trial in range(60):
        lengths = [rng.choice([0, 1, 3, 8, 30, 90]) + rng.randrange(3) for _ in range(rng.randrange(1, 9))]
        cost = rng.choice([0, 5, 40, 300])
        runs = response_groups(lengths, cost)
        assert sorted(i for r in runs for i in r) == list(range(len(lengths)))
        flat = [i for r in runs for i in r]
        assert [lengths[i] for i in flat] == sorted(lengths)

        def total(parts):
            return sum(cost + len(p) * max(lengths[i] for i in p) for p in parts)

        best = min(total([flat[a:b] for a, b in zip((0, *cuts), (*cuts, len(flat)))])
                   for k in range(len(flat)) for cuts in itertools.combinations(range(1, len(flat)), k))
        assert total(runs) == best
    assert len(response_groups([1, 2, 90, 91], 10 ** 6)) == 1 and len(response_groups([1, 90], 0)) == 2


def test_float32_within_rounding(toys, tmp_path):
    """In float32 (the CPU default) the two paths differ by float rounding only: ≤ 1e-5 relative."""
    (_, _), tok = toys
    m = HFModel(make_toy_model(tmp_path / "c", seed=2, hidden=64, noise=0.3), tok, "cpu")
    pairs = _pairs(tok, seed=2)
    _assert_same(m.score(pairs, keep=SETTINGS), m.score(pairs, keep=SETTINGS, share_prompts=False), 1e-5)


def test_falls_back_where_sharing_cannot_apply(toys, tmp_path):
    """No repeated prompt: no shared path (it would cost a forward more). A sliding-window model (Mistral): its
    cache is not a plain full-attention one, so the full pass runs, is remembered, and gives the same scores."""
    from transformers import MistralConfig, MistralForCausalLM

    (a, _), tok = toys
    pairs = _pairs(tok)
    distinct = {tuple(p): (p, r) for p, r in pairs if r}
    with torch.inference_mode():
        assert a._shared_prompt_logits(list(distinct.values())) is None
        assert a._shared_prompt_logits([(p, []) for p, _ in pairs]) is None  # no response token to score
    torch.manual_seed(0)
    cfg = MistralConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, sliding_window=4, pad_token_id=0,
                        bos_token_id=1, eos_token_id=2, max_position_embeddings=256)
    MistralForCausalLM(cfg).save_pretrained(tmp_path / "sw")
    tok.save_pretrained(tmp_path / "sw")
    sw = HFModel(tmp_path / "sw", tok, "cpu", "float64")
    new = sw.score(pairs, keep=SETTINGS)
    assert sw._shares_prompts is False
    _assert_same(new, sw.score(pairs, keep=SETTINGS, share_prompts=False), 1e-12)


def test_shipped_lineage_own_and_cross_scores(tmp_path):
    """The shipped lineage (bf16 weights, scored in float64 and in float32): sft's and rlvr's samples of 4 problems
    × 4 scored by sft — own with nuclei, rlvr's against rlvr's kept nuclei and against rlvr reloaded with another
    instruction than sft's — both paths alike."""
    problems = load_problems("builtin", 4, 0)
    settings = SamplingSettings(0.6, 0.95, 64)
    for dtype, tol in (("float64", 1e-9), ("float32", 1e-5)):
        models, prompts = {}, {}
        for name in ("sft", "rlvr"):
            tok = load_tokenizer(TINY / name, name)
            models[name] = HFModel(TINY / name, tok, "cpu", dtype)
            prompts[name] = [prompt_ids(tok, build_prompt(tok, p.question, model_instruction(TINY / name, "auto")))
                             for p in problems]
        rows = [(i, s) for i in range(len(problems)) for s in range(4)]
        gens = {n: models[n].generate([prompts[n][i] for i, _ in rows], (), settings,
                                      [derived_seed(n, i, s) for i, s in rows]) for n in models}
        sft, rlvr = models["sft"], models["rlvr"]
        own = [(prompts["sft"][i], g.token_ids) for (i, _), g in zip(rows, gens["sft"])]
        _assert_same(sft.score(own, keep=settings), sft.score(own, keep=settings, share_prompts=False), tol)
        cross = [(prompts["sft"][i], g.token_ids) for (i, _), g in zip(rows, gens["rlvr"])]
        kept = rlvr.score([(prompts["rlvr"][i], g.token_ids) for (i, _), g in zip(rows, gens["rlvr"])], keep=settings)
        ref = KLReference(None, [], settings, nuclei=[s.nucleus for s in kept])
        _assert_same(sft.score(cross, ref), sft.score(cross, ref, share_prompts=False), tol)
        other = [prompt_ids(rlvr.tokenizer, build_prompt(rlvr.tokenizer, problems[i].question)) for i, _ in rows]
        assert other[0] != prompts["rlvr"][0]  # the default instruction, not the lab's bare question
        ref = KLReference(rlvr, other, settings)
        new = sft.score(cross, ref)
        _assert_same(new, sft.score(cross, ref, share_prompts=False), tol)
        assert sum(s.tokens for s in new) > 100 and sum(s.kl_sum for s in new) > 0
