"""`ServeConfig`: everything `d2d serve` and `serving.build_app` need, validated at once.

    d2d serve --model runs/demo/sft --port 8000 --set llm_replicas=2

Deployment resources (replicas, autoscaling, CPUs, GPUs) come from here, never
from code; the defaults fit a 2-core machine (1 CPU for the two deployments).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

DEPLOYMENTS = ("Ingress", "LLM")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK or host.startswith("127.")


@dataclass(kw_only=True)
class ServeConfig:
    model: str = ""
    """Hugging Face causal-LM folder to serve (RUN/sft, RUN/ppo, any local Llama/GPT-2 folder); its tokenizer must carry a chat template."""
    model_name: str = ""
    """The model id clients send and /v1/models lists; empty = the folder's name (e.g. `sft`)."""
    run_dir: str = "runs/default"
    """Run directory: the audit log goes to RUN_DIR/serve/audit.jsonl unless `audit_log` says otherwise."""
    host: str = "127.0.0.1"
    """Address the Serve HTTP proxy binds; anything but loopback exposes the API (and then needs API keys or `allow_anonymous`)."""
    allowed_hosts: list[str] = field(default_factory=list)
    """Host header names accepted besides localhost/127.0.0.1/::1 and `host` itself (DNS-rebinding defence); `*` = any."""
    allow_anonymous: bool = False
    """Start without API keys on a non-loopback `host` (refused otherwise: anyone on the network could use it)."""
    port: int = 8000
    """Port of the Serve HTTP proxy."""
    system_prompt: str = ""
    """Operator system prompt, always first (a client's system messages follow it, never replace it); with guards on it carries the leak guard's canary."""

    # --- guardrails
    guards: bool = True
    """Run the guardrails input chain (every client message and the joined conversation) and output chain inside the ingress; false = none."""
    guard_policy: str = ""
    """Guard policy YAML (guards, thresholds, actions); empty = the default policy shipped with guardrails."""
    audit_log: str = ""
    """JSONL audit log of guard verdicts (keyed HMACs, never raw text); empty = RUN_DIR/serve/audit.jsonl; `off` disables."""
    audit_secret_env: str = "D2D_AUDIT_SECRET"
    """Environment variable holding the audit log's HMAC key; unset = a random key per start (records cannot be matched across restarts)."""
    stream_holdback_chars: int = 64
    """Streamed text this close to the end of the last scanned window is held back until a later scan covers it."""
    refusal_message: str = "I can't help with that request."
    """The assistant's reply when a guard blocks the prompt or the reply (finish_reason content_filter)."""

    # --- security and limits
    api_keys_env: str = "D2D_API_KEYS"
    """Environment variable holding comma-separated API keys (read by `d2d serve`, never logged)."""
    api_keys_file: str = ""
    """File of API keys, one per line as `KEY` or `KEY REQUESTS_PER_MINUTE`; `#` starts a comment."""
    rate_limit_per_minute: int = 600
    """Requests per minute per API key (per client address when no keys are configured), token bucket per ingress replica; 0 = off."""
    auth_failures_per_minute: int = 10
    """Failed API-key checks allowed per client address per minute per ingress replica; beyond it 429 without checking the key; 0 = off."""
    rate_limit_clients: int = 10_000
    """Most clients each limiter tracks per ingress replica; the least recently seen is forgotten first."""
    max_body_bytes: int = 262_144
    """Largest request body accepted; larger gets 413 (before the rest is read)."""
    body_timeout_s: float = 10.0
    """Deadline for receiving the whole request body; a stalled client gets 408 and frees its slot."""
    request_timeout_s: float = 120.0
    """Deadline for a whole request (guards + generation); then 408 (in-band error when streaming). Serve's proxy gets this + 30 s as a backstop."""
    max_messages: int = 64
    """Most messages in one request; more gets 400."""
    max_tokens_limit: int = 512
    """Largest `max_tokens` a request may ask for; larger gets 400."""
    default_max_tokens: int = 128
    """`max_tokens` when the request gives none."""
    context_length: int = 0
    """Prompt + completion tokens allowed; 0 = the model's max_position_embeddings. Longer prompts get 400 context_length_exceeded."""
    log_content: bool = False
    """Log prompts and completions (after input redaction). Off by default: logs hold ids, sizes and timings only."""

    # --- generation and batching
    dynamic_batching: bool = True
    """Continuous batching: concurrent requests (streaming or not) join the running batch at the next decode step and share its forward passes; false = one request at a time."""
    max_batch_size: int = 16
    """Most requests decoded together in one LLM replica; more wait for a row to finish."""
    batch_wait_timeout_s: float = 0.01
    """When the model is idle, how long the first request waits for others to share its prefill (later arrivals join the running batch anyway)."""
    torch_threads: int = 0
    """Intra-op threads of the LLM replica; 0 = Ray's default, OMP_NUM_THREADS = the replica's whole CPUs (at least 1)."""
    device: str = "auto"
    """`auto` (cuda when the replica has a GPU, else cpu), `cpu` or `cuda`."""

    # --- deployments (resources always from here)
    ingress_replicas: int = 1
    """Replicas of the FastAPI ingress (which also runs the guard chains)."""
    ingress_num_cpus: float = 0.5
    """CPUs per ingress replica."""
    llm_replicas: int = 1
    """Replicas of the LLM deployment."""
    llm_num_cpus: float = 0.5
    """CPUs per LLM replica."""
    llm_num_gpus: float = 0.0
    """GPUs per LLM replica (fractions share a GPU)."""
    max_ongoing_requests: int = 64
    """Requests one replica holds at once (Serve's default of 5 would starve batching)."""
    autoscaling: dict = field(default_factory=dict)
    """Per-deployment Serve autoscaling_config, e.g. {"LLM": {"min_replicas": 1, "max_replicas": 4}}; replaces that deployment's replica count."""

    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"max_tokens_limit": 128, "default_max_tokens": 32},
        "open": {"guards": False, "rate_limit_per_minute": 0},
    }

    def __post_init__(self):
        if not self.model:
            raise ValueError("model: give the model folder to serve (e.g. --model runs/demo/sft)")
        if not 0 < self.port < 65536:
            raise ValueError(f"port: {self.port} is not a TCP port")
        for name in ("max_body_bytes", "max_messages", "max_tokens_limit", "default_max_tokens",
                     "max_batch_size", "max_ongoing_requests", "ingress_replicas", "llm_replicas",
                     "rate_limit_clients"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be at least 1, got {getattr(self, name)}")
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError("default_max_tokens: must not exceed max_tokens_limit")
        for name in ("rate_limit_per_minute", "auth_failures_per_minute", "context_length", "torch_threads",
                     "stream_holdback_chars"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("ingress_num_cpus", "llm_num_cpus", "llm_num_gpus", "batch_wait_timeout_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("body_timeout_s", "request_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: must be > 0 seconds, got {getattr(self, name)}")
        if not isinstance(self.allowed_hosts, list) or not all(isinstance(h, str) and h for h in self.allowed_hosts):
            raise ValueError(f"allowed_hosts: expected a list of host names, got {self.allowed_hosts!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device: {self.device!r} is not one of auto, cpu, cuda")
        for name, opts in self.autoscaling.items():
            if name not in DEPLOYMENTS:
                raise ValueError(f"autoscaling: unknown deployment {name!r}; one of {', '.join(DEPLOYMENTS)}")
            if not isinstance(opts, dict):
                raise ValueError(f"autoscaling.{name}: expected a mapping of autoscaling_config fields")

    def host_names(self) -> set[str]:
        """Host header names (lower case, no port) the ingress accepts; {"*"} = any."""
        names = {*LOOPBACK, *(h.lower() for h in self.allowed_hosts)}
        if self.host not in ("0.0.0.0", "::"):
            names.add(self.host.lower())
        return {"*"} if "*" in names else names

    def check_exposure(self, keyed: bool) -> None:
        """Refuse a keyless server on a non-loopback address unless the operator said so."""
        if not keyed and not is_loopback(self.host) and not self.allow_anonymous:
            raise ValueError(f"allow_anonymous: host {self.host} is reachable from the network and no API keys are "
                             f"configured ({self.api_keys_env} / api_keys_file); add keys or pass --allow-anonymous")

    @property
    def served_name(self) -> str:
        return self.model_name or self.model.rstrip("/").rsplit("/", 1)[-1]


def load_api_keys(cfg: ServeConfig, environ: dict | None = None) -> dict[str, int]:
    """API key -> requests per minute, from the env var and the key file; {} = auth off."""
    import os

    environ = os.environ if environ is None else environ
    keys: dict[str, int] = {}
    for k in (environ.get(cfg.api_keys_env) or "").split(","):
        if k.strip():
            keys[k.strip()] = cfg.rate_limit_per_minute
    if cfg.api_keys_file:
        from pathlib import Path

        p = Path(cfg.api_keys_file)
        if not p.is_file():
            raise ValueError(f"api_keys_file: {p} not found")
        for n, line in enumerate(p.read_text().splitlines(), 1):
            parts = line.split("#", 1)[0].split()
            if not parts:
                continue
            if len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
                raise ValueError(f"api_keys_file: line {n}: expected `KEY [REQUESTS_PER_MINUTE]`")
            keys[parts[0]] = int(parts[1]) if len(parts) == 2 else cfg.rate_limit_per_minute
    return keys
