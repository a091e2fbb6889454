"""A training stage on an autoscaling cluster: Ray's fake multi-node provider
(`ray.cluster_utils.AutoscalingCluster`'s config) with a head that offers no CPUs and a
1-CPU worker type with `min_workers: 0`. The stage's Ray Train request makes the autoscaler
add worker nodes, the stage finishes on them, and the idle nodes go away afterwards.

The head is started here with free ports and its own temp dir rather than through
`AutoscalingCluster.start()`, which runs `ray stop --force` (every Ray on the machine) and
binds the default ports.

    python -m pytest tests/test_autoscale.py -q
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from conftest import free_port

pytestmark = pytest.mark.multinode

RAY = str(Path(sys.executable).with_name("ray"))


def _own_pids(marker: str) -> list[int]:
    """Processes whose command line names this test's temp dir (the head and every node it made)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit() and int(d.name) != os.getpid():
            try:
                if marker in (d / "cmdline").read_bytes().decode(errors="ignore"):
                    pids.append(int(d.name))
            except OSError:
                pass
    return pids


def autoscaling_config(gcs_port: int) -> dict:
    """What `AutoscalingCluster(head_resources={"CPU": 0}, worker_node_types=...)` generates, written
    out: its template (fake_multi_node/example.yaml) is not in the Ray wheel."""
    return {
        "cluster_name": "d2d-fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "use_node_id_as_ip": True, "disable_node_updaters": True,
                     "disable_launch_config_check": True, "gcs_address": f"127.0.0.1:{gcs_port}"},
        "available_node_types": {
            "ray.head.default": {"resources": {}, "node_config": {}, "max_workers": 0},
            "cpu_1": {"resources": {"CPU": 1, "object_store_memory": 200_000_000}, "node_config": {},
                      "min_workers": 0, "max_workers": 2},
        },
        "head_node_type": "ray.head.default", "auth": {}, "docker": {}, "file_mounts": {},
        "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def _alive(ray) -> list[dict]:
    return [n for n in ray.nodes() if n["Alive"]]


@pytest.fixture(scope="module")
def autoscaling_cluster(no_shared_ray, tmp_path_factory):
    gcs = free_port()
    config = autoscaling_config(gcs)
    temp = Path(tempfile.mkdtemp(prefix="d2d-as-", dir="/tmp"))  # short: Ray's socket paths are length-limited
    cfg_file = temp / "autoscaling.json"
    cfg_file.write_text(json.dumps(config))
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    head = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=0", "--node-ip-address=127.0.0.1",
         f"--autoscaling-config={cfg_file}", f"--temp-dir={temp}", "--include-dashboard=false",
         f"--dashboard-port={free_port()}",
         f"--ray-client-server-port={free_port()}", f"--node-manager-port={free_port()}",
         f"--object-manager-port={free_port()}", f"--metrics-export-port={free_port()}",
         f"--dashboard-agent-listen-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
         f"--runtime-env-agent-port={free_port()}", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    import ray

    from cluster.runtime import connect

    try:
        deadline = time.time() + 90
        while True:
            try:
                connect(f"127.0.0.1:{gcs}")
                break
            except ConnectionError:
                if head.poll() is not None or time.time() > deadline:
                    pytest.fail("the autoscaling head did not come up")
                time.sleep(1)
        yield ray
    finally:
        ray.shutdown()
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
        for pid in _own_pids(str(temp)):  # nodes the autoscaler started outlive the head's group
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(temp, ignore_errors=True)


def test_a_training_stage_scales_workers_up_from_zero_and_back_down(autoscaling_cluster, tmp_path):
    ray = autoscaling_cluster
    from cluster.config import build_config
    from pipeline.train.sft import SFTConfig
    from pipeline.train.sft import run as run_sft
    from serving.tiny_model import build_tiny_model

    (head,) = _alive(ray)
    assert head["Resources"].get("CPU", 0) == 0, "the head offers no CPUs: training needs new nodes"
    run_dir = tmp_path / "run"
    build_tiny_model(str(run_dir / "base"), hidden=32, layers=1, context=128)
    cfg = build_config(SFTConfig, "tiny", {"run_dir": str(run_dir), "identity_n": 20, "arith_n": 40, "max_len": 64,
                                           "max_steps": 3, "eval_every": 1000, "num_workers": 2,
                                           "cpus_per_worker": 1})
    run_sft(cfg)
    assert (run_dir / "sft" / "model.safetensors").exists()

    workers = [json.loads(x)["nodes"] for x in (run_dir / "sft" / "events.jsonl").read_text().splitlines()
               if json.loads(x)["event"] == "workers"]
    assert workers and all(head["NodeID"] not in nodes and len(set(nodes)) == 2 for nodes in workers), workers
    started = {n["NodeID"] for n in ray.nodes()} - {head["NodeID"]}
    assert set(workers[-1]) <= started

    deadline = time.time() + 180
    while len(_alive(ray)) > 1:
        assert time.time() < deadline, f"idle nodes still up: {[n['NodeID'] for n in _alive(ray)]}"
        time.sleep(1)
    assert [n["NodeID"] for n in _alive(ray)] == [head["NodeID"]]
