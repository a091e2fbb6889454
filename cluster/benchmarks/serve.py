"""`d2d bench serve`: throughput and latency of the live app at concurrency 1, 8 and 32.

    d2d bench serve --run-dir bench            # full; --quick for a smoke run

Three deployments of a small random Llama (same weights each time): batching on
with guards off, batching off with guards off, and batching on with guards on.
Every setup gets the same requests (prompts, max_tokens, temperature 1.0, one
seed per request) from the same closed-loop client. Reports requests/s,
p50/p95/p99 latency and generated tokens/s per concurrency, the mean rows per
forward pass, the guards' added latency (p50 at concurrency 1, on minus off), the
dynamic batching speed-up in tokens/s at concurrency 8 (target >= 3x), and the
1-minute load average before and after (the box may be shared: compare runs only
at similar load).
"""

from __future__ import annotations

import os
import statistics
import time
from concurrent.futures import ThreadPoolExecutor


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(url: str, model: str, concurrency: int, n: int, max_tokens: int) -> dict:
    import httpx

    client = httpx.Client(timeout=300, limits=httpx.Limits(max_connections=concurrency + 4))

    def one(i: int):
        body = {"model": model, "max_tokens": max_tokens, "temperature": 1.0, "seed": i,
                "messages": [{"role": "user", "content": f"Tell me a story about request number {i}."}]}
        t = time.perf_counter()
        r = client.post(f"{url}/v1/chat/completions", json=body)
        r.raise_for_status()
        return time.perf_counter() - t, r.json()["usage"]["completion_tokens"]

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: replicas, connections, allocator
        started = time.perf_counter()
        res = list(pool.map(one, range(n)))
        wall = time.perf_counter() - started
    lat = [r[0] * 1000 for r in res]
    return {"requests": n, "req_per_s": round(n / wall, 2), "tokens_per_s": round(sum(r[1] for r in res) / wall, 1),
            "p50_ms": round(_pct(lat, 0.5), 1), "p95_ms": round(_pct(lat, 0.95), 1),
            "p99_ms": round(_pct(lat, 0.99), 1), "mean_ms": round(statistics.mean(lat), 1)}


def run_bench(out_dir: str, quick: bool) -> dict:
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import ray
    from ray import serve

    from serving.config import ServeConfig
    from serving.serve_cli import APP_NAME, start
    from serving.tiny_model import build_tiny_model

    os.makedirs(out_dir, exist_ok=True)
    if not ray.is_initialized():
        # Replica logs stay in their files: echoing every access line here would load the client.
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    model = build_tiny_model(os.path.join(out_dir, "model"), hidden=128, layers=4, context=1024)
    max_tokens = 16 if quick else 32
    levels = {1: 6, 8: 24, 32: 64} if quick else {1: 16, 8: 64, 32: 128}
    setups = {"batching_on_guards_off": dict(guards=False, dynamic_batching=True),
              "batching_off_guards_off": dict(guards=False, dynamic_batching=False),
              "batching_on_guards_on": dict(guards=True, dynamic_batching=True)}
    out: dict = {"model": "random Llama hidden 128 x 4 layers", "max_tokens": max_tokens,
                 "load_avg_1m_start": round(os.getloadavg()[0], 2)}
    for name, opts in setups.items():
        cfg = ServeConfig(model=model, port=_free_port(), run_dir=out_dir, rate_limit_per_minute=0,
                          max_batch_size=32, audit_log="off", api_keys_env="D2D_BENCH_NO_KEYS", **opts)
        start(cfg)
        url = f"http://127.0.0.1:{cfg.port}"
        llm = serve.get_deployment_handle("LLM", APP_NAME)
        out[name] = {}
        for c, n in levels.items():
            before = llm.info.remote().result()
            out[name][f"c{c}"] = measure(url, cfg.served_name, c, n, max_tokens)
            after = llm.info.remote().result()
            passes = after["forward_passes"] - before["forward_passes"]
            out[name][f"c{c}"]["rows_per_forward_pass"] = round(
                (after["row_steps"] - before["row_steps"]) / max(passes, 1), 2)
        out[name]["llm_torch_threads"] = after["torch_threads"]
        serve.shutdown()
    on, off = out["batching_on_guards_off"], out["batching_off_guards_off"]
    out["batching_speedup_tokens_per_s_c8"] = round(on["c8"]["tokens_per_s"] / off["c8"]["tokens_per_s"], 2)
    out["guards_added_ms_p50_c1"] = round(out["batching_on_guards_on"]["c1"]["p50_ms"] - on["c1"]["p50_ms"], 1)
    out["load_avg_1m_end"] = round(os.getloadavg()[0], 2)
    out["reference"] = "batching speed-up target >= 3x tokens/s at concurrency 8"
    return out
