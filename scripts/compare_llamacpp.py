"""Side by side: llama.cpp (through llama-cpp-python) and sparq on the same GGUF, the same token
ids, the same thread count, runs alternating. Run it through scripts/compare_llamacpp.sh, which
makes the throwaway virtual environment and builds sparq's generate example.

The query: a prompt of --prompt-tokens ids (a fixed English text, tokenized by llama.cpp), then
--gen greedy tokens (end-of-sequence ignored), model loaded, timed from the ids in to the last
token out. Prefill tok/s = prompt / (time to the first token); decode tok/s = (gen - 1) / (the
rest). llama.cpp runs with its defaults (f16 KV cache, its own thread pool); the per-token
Python overhead of llama-cpp-python's `eval` is a few tens of µs, under 1% of a token here.
"""
import argparse
import ctypes
import json
import statistics
import subprocess
import sys
import time

import numpy as np
from llama_cpp import Llama

TEXT = (
    "The history of astronomy is a story of patient observation and sudden insight. Ancient "
    "skywatchers tracked the motions of the planets against the fixed stars, and their records, "
    "kept over centuries, allowed later scholars to build models of remarkable precision. The "
    "invention of the telescope changed everything: moons around Jupiter, phases of Venus, and "
    "countless stars invisible to the naked eye. Spectroscopy then revealed what stars are made "
    "of, and photography let astronomers measure faint light over long exposures. In the "
    "twentieth century, radio telescopes, space observatories and electronic detectors opened "
    "windows across the whole electromagnetic spectrum, from gamma rays to radio waves. Today, "
    "surveys map billions of galaxies, and gravitational-wave detectors listen to colliding "
    "black holes. Each new instrument has answered old questions and raised new ones."
)


def llama_query(llm, ids, gen):
    n_vocab = llm.n_vocab()
    logits = lambda: np.ctypeslib.as_array(ctypes.cast(llm._ctx.get_logits_ith(-1), ctypes.POINTER(ctypes.c_float)), shape=(n_vocab,))
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(ids)
    tok = int(np.argmax(logits()))
    t1 = time.perf_counter()
    out = [tok]
    for _ in range(gen - 1):
        llm.eval([tok])
        tok = int(np.argmax(logits()))
        out.append(tok)
    t2 = time.perf_counter()
    return {"prefill_s": t1 - t0, "decode_s": t2 - t1, "ids": out}


def sparq_query(binary, model, ids, gen, threads):
    cmd = [binary, "--model", model, "--prompt-ids", ",".join(map(str, ids)), "--max-tokens", str(gen), "--ignore-eos",
           "--greedy", "--threads", str(threads), "--json"]
    j = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {"prefill_s": j["ttft_ms"] / 1e3, "decode_s": (j["total_ms"] - j["ttft_ms"]) / 1e3, "ids": j["generated_ids"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--sparq", required=True, help="path to sparq's generate example binary")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--prompt-tokens", type=int, default=128)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--json", action="store_true", help="also print the medians as one JSON line")
    a = ap.parse_args()

    llm = Llama(model_path=a.model, n_ctx=1024, n_batch=512, n_threads=a.threads, n_threads_batch=a.threads, verbose=False)
    ids = llm.tokenize(TEXT.encode(), add_bos=False)
    if len(ids) < a.prompt_tokens:
        sys.exit(f"the fixed text has only {len(ids)} tokens; --prompt-tokens must be at most that")
    ids = ids[: a.prompt_tokens]

    print(f"model {a.model}\nprompt {len(ids)} tokens, {a.gen} generated (greedy), {a.threads} threads, "
          f"{a.runs} alternating runs after one warm-up each", flush=True)
    llama_query(llm, ids, a.gen)
    sparq_query(a.sparq, a.model, ids, a.gen, a.threads)
    runs = {"llama.cpp": [], "sparq": []}
    for i in range(a.runs):
        runs["llama.cpp"].append(llama_query(llm, ids, a.gen))
        runs["sparq"].append(sparq_query(a.sparq, a.model, ids, a.gen, a.threads))
        print(f"  run {i + 1}/{a.runs}: llama.cpp {1e3 * sum(runs['llama.cpp'][-1][k] for k in ('prefill_s', 'decode_s')):.0f} ms, "
              f"sparq {1e3 * sum(runs['sparq'][-1][k] for k in ('prefill_s', 'decode_s')):.0f} ms", flush=True)

    med = {}
    for name, rs in runs.items():
        med[name] = {
            "prefill_tok_s": statistics.median(len(ids) / r["prefill_s"] for r in rs),
            "decode_tok_s": statistics.median((a.gen - 1) / r["decode_s"] for r in rs),
            "query_ms": statistics.median(1e3 * (r["prefill_s"] + r["decode_s"]) for r in rs),
        }
    l, s = med["llama.cpp"], med["sparq"]
    print(f"\n{'':<12}{'prefill tok/s':>15}{'decode tok/s':>15}{'query ms':>12}")
    for name in ("llama.cpp", "sparq"):
        m = med[name]
        print(f"{name:<12}{m['prefill_tok_s']:>15.0f}{m['decode_tok_s']:>15.0f}{m['query_ms']:>12.1f}")
    print(f"{'sparq / l.c':<12}{s['prefill_tok_s'] / l['prefill_tok_s']:>14.2f}×{s['decode_tok_s'] / l['decode_tok_s']:>14.2f}×"
          f"{l['query_ms'] / s['query_ms']:>11.2f}×  (query: llama.cpp time ÷ sparq time)")
    agree = next((i for i, (x, y) in enumerate(zip(runs["llama.cpp"][0]["ids"], runs["sparq"][0]["ids"])) if x != y), a.gen)
    print(f"greedy tokens identical for the first {agree} of {a.gen} (the engines round differently; a near-tie can flip)")
    if a.json:
        print(json.dumps({"threads": a.threads, "runs": a.runs, "prompt_tokens": len(ids), "gen": a.gen, **med}))


if __name__ == "__main__":
    main()
