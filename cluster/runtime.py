"""Connecting to Ray: an embedded local Ray by default, or an existing cluster.

    from cluster.runtime import connect
    connect()                      # embedded, sized to this machine, dashboard off
    connect("auto")                # the cluster `ray start` made on this node
    connect("ray://head:10001")    # Ray Client

Environment variables every worker needs (offline hubs, tldextract's suffix list,
Ray auth mode) are set here for the driver and passed to workers through the job's
`runtime_env`, so that no stage has to remember them.
"""

from __future__ import annotations

import logging
import os

#: Set in the driver and in every Ray worker. Nothing here may reach the network.
WORKER_ENV: dict[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS": "",
    "TF_CPP_MIN_LOG_LEVEL": "3",
    "PYTHONWARNINGS": "ignore::DeprecationWarning,ignore::FutureWarning",
}

#: Driver-side defaults that make Ray quiet and fast on small machines.
DRIVER_ENV: dict[str, str] = {
    # Ray Train's controller polls workers this often; 2 s default dominates tiny steps.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    "RAY_DEDUP_LOGS": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DATA_DISABLE_PROGRESS_BARS": "0",
}


def set_process_env() -> None:
    """Apply WORKER_ENV and DRIVER_ENV to this process without overriding the user's."""
    for k, v in {**WORKER_ENV, **DRIVER_ENV}.items():
        os.environ.setdefault(k, v)
    # Auth mode must agree between client and cluster; say it explicitly. Local
    # embedded clusters bind 127.0.0.1 only, so "disabled" is the safe default there;
    # a remote cluster with tokens needs RAY_AUTH_MODE=token set by the user.
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def runtime_env(extra_env: dict[str, str] | None = None, **kwargs) -> dict:
    env = {k: os.environ.get(k, v) for k, v in WORKER_ENV.items()}
    env["RAY_AUTH_MODE"] = os.environ.get("RAY_AUTH_MODE", "disabled")
    env.update(extra_env or {})
    return {"env_vars": env, **kwargs}


def connect(
    address: str | None = None,
    *,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    dashboard: bool = False,
    log_level: int = logging.WARNING,
):
    """Connect this process to Ray and return the context; reuse an existing connection.

    `address=None` starts an embedded local Ray sized to the machine (or to
    `num_cpus`), with the dashboard off unless asked. Any other value ("auto",
    "ray://host:10001", "host:6379") joins that cluster, which owns its resources.
    Inside a Ray job (RAY_ADDRESS set by the job supervisor) it joins that cluster.
    """
    set_process_env()
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"ray(\.|$)")
    import ray

    if ray.is_initialized():
        return ray.get_runtime_context()
    if address is None and os.environ.get("RAY_ADDRESS"):
        address = os.environ["RAY_ADDRESS"]
    kwargs: dict = dict(
        logging_level=log_level,
        log_to_driver=True,
        configure_logging=True,
    )
    if "RAY_JOB_CONFIG_JSON_ENV_VAR" not in os.environ:
        # A Ray job's driver already runs under the job's runtime_env (d2d submit sets the same
        # variables there), and Ray refuses a second one that names the same keys.
        kwargs["runtime_env"] = runtime_env()
    if address in (None, "", "local"):
        kwargs.update(
            address="local",
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
        )
    else:
        kwargs["address"] = address
    try:
        ray.init(**kwargs)
    except ConnectionError as e:
        raise ConnectionError(f"cannot reach Ray at {address!r}: {e}") from None
    try:
        from ray.data import DataContext

        ctx = DataContext.get_current()
        ctx.enable_progress_bars = os.environ.get("D2D_PROGRESS", "1") == "1"
        ctx.print_on_execution_start = False
    except Exception:  # progress-bar knobs vary between Ray versions; cosmetic only
        pass
    return ray.get_runtime_context()


def cluster_cpus() -> int:
    """CPUs the connected cluster has (for sizing actor pools when config says 'auto')."""
    import ray

    return int(ray.cluster_resources().get("CPU", 1))
