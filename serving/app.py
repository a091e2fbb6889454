"""`build_app(config) -> Application`: ingress (with the guard chains) -> LLM, from one config.

    from serving.app import build_app
    serve.run(build_app({"model": "runs/demo/sft"}))
    serve run serving/serve_config.yaml          # import_path: serving.app:build_app

Every deployment's replicas, autoscaling and resources come from `ServeConfig`.
API keys and the audit HMAC secret are read here (env var / file); only the keys'
sha256 hashes are handed to the ingress, so plaintext keys never sit in Serve's
deployment config. A keyless app on a non-loopback host is refused unless
`allow_anonymous` is set.
"""

from __future__ import annotations

import dataclasses
import os

from ray.serve import Application

from serving.config import ServeConfig, load_api_keys


def _options(cfg: ServeConfig, name: str, replicas: int, num_cpus: float, num_gpus: float = 0.0) -> dict:
    opts: dict = {"ray_actor_options": {"num_cpus": num_cpus, "num_gpus": num_gpus},
                  "max_ongoing_requests": cfg.max_ongoing_requests}
    if name in cfg.autoscaling:
        opts["autoscaling_config"] = dict(cfg.autoscaling[name])
    else:
        opts["num_replicas"] = replicas
    return opts


def build_app(config: ServeConfig | dict) -> Application:
    from serving.admission import key_hash
    from serving.api import Ingress
    from serving.llm import LLM

    cfg = config if isinstance(config, ServeConfig) else ServeConfig(**config)
    plain = dataclasses.asdict(cfg)
    keys = {key_hash(k): rpm for k, rpm in load_api_keys(cfg).items()}
    cfg.check_exposure(bool(keys))
    if cfg.guards:
        try:
            import guardrails.chain  # noqa: F401
        except ImportError as e:
            raise ValueError(f"guards: the guardrails package is not usable here ({e}); set guards=false") from None
    secret = (os.environ.get(cfg.audit_secret_env) or "").encode() or None
    llm = LLM.options(**_options(cfg, "LLM", cfg.llm_replicas, cfg.llm_num_cpus, cfg.llm_num_gpus)).bind(plain)
    return Ingress.options(**_options(cfg, "Ingress", cfg.ingress_replicas, cfg.ingress_num_cpus)).bind(
        llm, plain, keys, secret)
