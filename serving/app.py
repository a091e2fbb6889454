"""`build_app(config) -> Application`: ingress -> InputGuard -> LLM -> OutputGuard, from one config.

    from serving.app import build_app
    serve.run(build_app({"model": "runs/demo/sft"}))
    serve run serving/serve_config.yaml          # import_path: serving.app:build_app

Every deployment's replicas, autoscaling and resources come from `ServeConfig`.
API keys are read here (env var / file) and only their sha256 hashes are handed
to the ingress, so plaintext keys never sit in Serve's deployment config.
"""

from __future__ import annotations

import dataclasses

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
    from serving.api import Ingress, key_hash
    from serving.llm import LLM

    cfg = config if isinstance(config, ServeConfig) else ServeConfig(**config)
    plain = dataclasses.asdict(cfg)
    keys = {key_hash(k): rpm for k, rpm in load_api_keys(cfg).items()}
    llm = LLM.options(**_options(cfg, "LLM", cfg.llm_replicas, cfg.llm_num_cpus, cfg.llm_num_gpus)).bind(plain)
    if not cfg.guards:
        return Ingress.options(**_options(cfg, "Ingress", cfg.ingress_replicas, cfg.ingress_num_cpus)).bind(
            llm, None, plain, keys)
    try:
        from serving.guards import InputGuard, OutputGuard
    except ImportError as e:
        raise ValueError(f"guards: the guardrails package is not usable here ({e}); set guards=false") from None
    input_guard = InputGuard.options(**_options(cfg, "InputGuard", cfg.guard_replicas, cfg.guard_num_cpus)).bind(plain)
    output_guard = OutputGuard.options(
        **_options(cfg, "OutputGuard", cfg.guard_replicas, cfg.guard_num_cpus)).bind(llm, plain)
    return Ingress.options(**_options(cfg, "Ingress", cfg.ingress_replicas, cfg.ingress_num_cpus)).bind(
        output_guard, input_guard, plain, keys)
