"""The chat app started for tests: a tiny model on a free port with two API keys."""

from __future__ import annotations

from conftest import free_port

KEY, LIMITED = "sk-test-main", "sk-test-limited"


def start_app(tmp_path, **overrides):
    """Build a tiny model, deploy the app on a free port; return (url, model name, config)."""
    from serving.config import ServeConfig
    from serving.serve_cli import start
    from serving.tiny_model import build_tiny_model

    model = build_tiny_model(str(tmp_path / "tiny-chat"))
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# test keys\n{KEY}\n{LIMITED} 2\n")
    opts = dict(port=free_port(), run_dir=str(tmp_path / "run"), api_keys_file=str(keys),
                rate_limit_per_minute=100_000, default_max_tokens=8, max_tokens_limit=64,
                guards=True)
    cfg = ServeConfig(model=model, **{**opts, **overrides})
    start(cfg)
    return f"http://127.0.0.1:{cfg.port}", cfg.served_name, cfg
