"""Serve autoscaling from config: `autoscaling` in the serve config gives the LLM and the ingress
(which runs the guard chains) a Ray Serve `autoscaling_config`; a real concurrent load through the HTTP proxy
makes Serve's own autoscaler add replicas, and they go again after the load stops."""

from __future__ import annotations

import threading
import time

import httpx
from conftest import free_port

SCALED = ("LLM", "Ingress")
POLICY = {"min_replicas": 1, "max_replicas": 2, "target_ongoing_requests": 1, "upscale_delay_s": 0.5,
          "downscale_delay_s": 2, "metrics_interval_s": 0.5, "look_back_period_s": 1}


def running(app: str) -> dict[str, int]:
    from ray import serve

    deps = serve.status().applications[app].deployments
    return {name: deps[name].replica_states.get("RUNNING", 0) for name in SCALED if name in deps}


def wait_for(cond, timeout: float, what: str, app: str):
    deadline = time.time() + timeout
    while not cond(running(app)):
        assert time.time() < deadline, f"{what}: replicas {running(app)}"
        time.sleep(0.5)


def test_llm_and_guarded_ingress_scale_up_under_load_and_back_down(ray_local, tmp_path):
    from ray import serve

    from serving.config import ServeConfig
    from serving.serve_cli import APP_NAME, start
    from serving.tiny_model import build_tiny_model

    cfg = ServeConfig(model=build_tiny_model(str(tmp_path / "m"), hidden=32, layers=1, context=256),
                      port=free_port(), run_dir=str(tmp_path / "run"), rate_limit_per_minute=0,
                      default_max_tokens=24, llm_num_cpus=0.1, ingress_num_cpus=0.1,
                      dynamic_batching=False, autoscaling={"LLM": POLICY, "Ingress": POLICY})
    start(cfg)
    url = f"http://127.0.0.1:{cfg.port}/v1/chat/completions"
    try:
        assert running(APP_NAME) == dict.fromkeys(SCALED, 1)
        stop = threading.Event()
        codes: list[int] = []

        def client():
            with httpx.Client(timeout=60) as c:
                while not stop.is_set():
                    r = c.post(url, json={"model": cfg.served_name, "max_tokens": 24,
                                          "messages": [{"role": "user", "content": "Tell me about the sea."}]})
                    codes.append(r.status_code)

        threads = [threading.Thread(target=client, daemon=True) for _ in range(6)]
        for t in threads:
            t.start()
        try:
            wait_for(lambda r: all(r.get(n, 0) == 2 for n in SCALED), 180, "scale up under load", APP_NAME)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert codes and set(codes) == {200}
        wait_for(lambda r: all(r.get(n, 0) == 1 for n in SCALED), 120, "scale down after load", APP_NAME)
    finally:
        serve.shutdown()
