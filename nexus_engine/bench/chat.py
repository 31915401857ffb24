"""`nexus bench chat`: both chat backends through the full engine, next to raw llama.cpp, in one run.

Measures, per backend: cold load (llama.cpp: first load in a fresh worker; transformers: GGUF conversion with
an empty cache), cached load (llama.cpp: reload; transformers: from the safetensors cache), time to first
token for a short prompt with the model warm, and decode tokens/s — all seen from the client, through the
worker, the protocol and the streaming path. Raw llama.cpp runs the same GGUF, prompt tokens and token count
in this process with the same thread count; engine and raw runs alternate so drift hits both equally.
"""

from __future__ import annotations

import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from nexus_engine import weights
from nexus_engine.client import EngineClient
from nexus_engine.config import load_config
from nexus_engine.protocol import LoadTower, TokenChunk, UnloadTower
from nexus_engine.towers.llm_llamacpp import LlamaCppChat, default_threads

# different short questions per run: the KV prefix cache may reuse the system prompt (as in real use), but
# never a whole repeated prompt, which would flatter the time to first token
SHORT = ["Name three primary colors.", "What is the capital of France?", "Give me a synonym for happy.",
         "How many legs does a spider have?", "What is 12 times 12?", "Name a famous painter.",
         "What color is the sky on a clear day?", "Say hello in Spanish."]
LONG = [{"role": "user", "content": "Write a long, detailed story about a dragon who learns to paint."}]


def _client_stream(client: EngineClient, tower: str, messages: list[dict[str, str]],
                   max_tokens: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    first = None
    pieces = 0
    handle = client.chat(messages, tower=tower, temperature=0.0, max_tokens=max_tokens)
    for msg in handle:
        if isinstance(msg, TokenChunk):
            pieces += 1
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    stats = handle.wait(5).stats
    n = int(stats["tokens"])
    return {"ttft_ms": ((first or end) - t0) * 1000, "tokens": n,
            "decode_tok_s": (n - 1) / (end - first) if first and n > 1 else 0.0, "worker": stats}


def _load_ms(client: EngineClient, tower: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    stats = client.submit(LoadTower(tower=tower)).wait(600).stats
    return (time.perf_counter() - t0) * 1000, str(stats.get("origin", ""))


def _raw_llama(path: Path, prompt_tokens: list[int], n_tokens: int, n_threads: int) -> dict[str, Any]:
    """Plain cyllama calls: decode the prompt, then greedy-sample exactly n_tokens (no early stop)."""
    from cyllama.llama import llama_cpp as cy

    cy.disable_logging()
    mp = cy.LlamaModelParams()
    mp.n_gpu_layers = 0
    model = cy.LlamaModel(str(path), mp)
    cp = cy.LlamaContextParams()
    cp.n_ctx, cp.n_batch, cp.n_threads, cp.n_threads_batch, cp.no_perf = 4096, 512, n_threads, n_threads, True
    ctx = cy.LlamaContext(model, cp)
    sampler = cy.LlamaSampler(cy.LlamaSamplerChainParams())
    sampler.add_greedy()
    t0 = time.perf_counter()
    ctx.decode(cy.llama_batch_get_one(prompt_tokens, 0))
    pos = len(prompt_tokens)
    token = sampler.sample(ctx, -1)
    first = time.perf_counter()
    for _ in range(n_tokens - 1):
        ctx.decode(cy.llama_batch_get_one([token], pos))
        pos += 1
        token = sampler.sample(ctx, -1)
    end = time.perf_counter()
    return {"ttft_ms": (first - t0) * 1000, "tokens": n_tokens, "decode_tok_s": (n_tokens - 1) / (end - first)}


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def run(runs: int = 5, max_tokens: int = 128, backends: tuple[str, ...] = ("llama_cpp", "transformers"),
        profile: str | None = None) -> dict[str, Any]:
    config = load_config()
    towers = {"llama_cpp": "smollm2-chat", "transformers": "smollm2-hf"}
    spec = config.towers[towers["llama_cpp"]]
    gguf = weights.resolve(spec)
    result: dict[str, Any] = {
        "bench": "chat", "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "threads": default_threads(), "model": gguf.name, "runs": runs,
        "max_tokens": max_tokens, "backends": {},
    }
    # a private cache, so the transformers "cold" load really converts the GGUF
    with tempfile.TemporaryDirectory(prefix="nexus-bench-cache-") as cache:
        env = {"NEXUS_CACHE": cache}
        with EngineClient(profile=profile, env=env) as client:
            probe = LlamaCppChat(spec)
            probe.load()
            prompt_tokens = probe.prompt_tokens(LONG)
            probe.unload()
            for backend in backends:
                tower = towers[backend]
                cold, origin_cold = _load_ms(client, tower)
                client.submit(UnloadTower(tower=tower)).wait(60)
                cached, origin_cached = _load_ms(client, tower)
                _client_stream(client, tower, [{"role": "user", "content": "Hi"}], 8)  # warm-up
                short = [_client_stream(client, tower, [{"role": "user", "content": SHORT[i % len(SHORT)]}], 32)
                         for i in range(runs)]
                engine_runs, raw_runs = [], []
                for _ in range(runs):
                    engine_runs.append(_client_stream(client, tower, LONG, max_tokens))
                    if backend == "llama_cpp":
                        n = max(2, engine_runs[-1]["tokens"])
                        raw_runs.append(_raw_llama(gguf, prompt_tokens, n, default_threads()))
                entry: dict[str, Any] = {
                    "tower": tower, "cold_load_ms": cold, "cold_origin": origin_cold, "cached_load_ms": cached,
                    "cached_origin": origin_cached, "ttft_short_warm_ms": _median(short, "ttft_ms"),
                    "ttft_long_ms": _median(engine_runs, "ttft_ms"),
                    "decode_tok_s": _median(engine_runs, "decode_tok_s"),
                    "tokens_per_run": [r["tokens"] for r in engine_runs],
                }
                if raw_runs:
                    raw_tok_s = _median(raw_runs, "decode_tok_s")
                    entry["raw_llama_cpp"] = {"ttft_ms": _median(raw_runs, "ttft_ms"), "decode_tok_s": raw_tok_s}
                    entry["engine_vs_raw_decode"] = entry["decode_tok_s"] / raw_tok_s
                result["backends"][backend] = entry
                client.submit(UnloadTower(tower=tower)).wait(60)
    b = result["backends"]
    if "llama_cpp" in b and "transformers" in b:
        result["llama_cpp_vs_transformers_decode"] = b["llama_cpp"]["decode_tok_s"] / b["transformers"]["decode_tok_s"]
    if "llama_cpp" in b:
        result["goals"] = {
            "engine_vs_raw_decode>=0.9": b["llama_cpp"]["engine_vs_raw_decode"] >= 0.9,
            "ttft_short_warm<=300ms": b["llama_cpp"]["ttft_short_warm_ms"] <= 300,
        }
    return result
