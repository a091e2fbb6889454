"""`d2d serve`: deploy the guarded chat app on Ray Serve and stay in the foreground until Ctrl-C.

    d2d serve --model runs/demo/sft --port 8000
    D2D_API_KEYS=secret1,secret2 d2d serve --model runs/demo/sft --set rate_limit_per_minute=120

Binds 127.0.0.1 unless `--host` says otherwise; a non-loopback host needs API keys or
`--allow-anonymous`. Once it has printed its URL, Ctrl-C
(or SIGTERM) deletes the application, shuts Serve down and exits 0; Ctrl-C during
start-up, or a second one during shutdown, interrupts it (the CLI exits 130).
"""

from __future__ import annotations

import json
import signal
import sys
import threading

from pipeline.errors import StageError
from serving.config import ServeConfig

APP_NAME = "d2d"


def start(cfg: ServeConfig):
    """Start Serve's proxy on cfg.host:cfg.port and deploy the app; return its ingress handle."""
    from ray import serve

    from serving.app import build_app
    from serving.config import load_api_keys

    cfg.check_exposure(bool(load_api_keys(cfg)))  # before the proxy binds a public address
    # The proxy's own timeout is a backstop behind the ingress's deadlines (its 408 is plain text).
    serve.start(http_options={"host": cfg.host, "port": cfg.port, "request_timeout_s": cfg.request_timeout_s + 30})
    return serve.run(build_app(cfg), name=APP_NAME, route_prefix="/")


def _auth_hint(cfg: ServeConfig) -> str:
    """The curl header to add when API keys are configured (the key itself is never printed)."""
    import os

    keyed = bool(os.environ.get(cfg.api_keys_env)) or bool(cfg.api_keys_file)
    return "-H 'Authorization: Bearer $YOUR_KEY' " if keyed else ""


def run(cfg: ServeConfig) -> dict:
    from pathlib import Path

    from ray import serve

    if not Path(cfg.model, "config.json").is_file():
        raise StageError(f"{cfg.model} is not a model folder (no config.json): run `d2d sft` first")
    start(cfg)
    url = f"http://{cfg.host}:{cfg.port}"
    body = json.dumps({"model": cfg.served_name, "messages": [{"role": "user", "content": "Who are you?"}]})
    print(f"serving on {url}  (chat page {url}/, API {url}/v1/chat/completions); Ctrl-C to stop\n"
          f"try: curl -s {url}/v1/chat/completions -H 'Content-Type: application/json' "
          f"{_auth_hint(cfg)}-d '{body}'", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    except KeyboardInterrupt:
        pass
    print("[d2d serve] shutting down ...", file=sys.stderr, flush=True)
    serve.shutdown()
    return {"url": url, "model": cfg.served_name, "stopped": True}
