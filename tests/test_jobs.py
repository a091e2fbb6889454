"""Ray Jobs for real: a head node started with `ray start --head` on 127.0.0.1, a stage
submitted with `d2d submit --follow`, its status and artifact checked, the cluster stopped."""

from __future__ import annotations

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
from conftest import ROOT, free_port

pytestmark = pytest.mark.multinode

RAY = str(Path(sys.executable).with_name("ray"))


@pytest.fixture(scope="module")
def head(no_shared_ray, tmp_path_factory):
    # The job's driver runs `python -m cluster.cli` from the raylet's PATH: put this venv first.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**os.environ, "PATH": path, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    gcs, dash, client = free_port(), free_port(), free_port()
    # Not under pytest's basetemp: concurrent pytest sessions prune old ones, and the job's
    # working_dir lives in Ray's temp dir.
    temp = tempfile.mkdtemp(prefix="d2d-jobs-", dir="/tmp")
    proc = subprocess.Popen(
        [RAY, "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
         f"--temp-dir={temp}", "--include-dashboard=true", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    address = f"http://127.0.0.1:{dash}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{address}/api/version", timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("ray start --head exited early")
            time.sleep(0.5)
    else:
        pytest.fail("Ray dashboard did not come up in 90 s")
    yield address, env
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    shutil.rmtree(temp, ignore_errors=True)


def d2d(env, *args, timeout=240):
    return subprocess.run([sys.executable, "-m", "cluster.cli", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def test_submit_follow_runs_a_stage_on_the_cluster(head, tmp_path):
    address, env = head
    text = tmp_path / "corpus.txt"
    text.write_text("To be, or not to be, that is the question.\n" * 200)
    run = tmp_path / "run"
    r = d2d(env, "submit", "tokenizer", "--input", str(text), "--run-dir", str(run),
            "--set", "vocab_size=300", "--address", address, "--follow", "--job-id", "d2d-test-ok")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "submitted job d2d-test-ok" in r.stdout
    assert "SUCCEEDED" in r.stdout
    assert (run / "tokenizer" / "tokenizer.json").exists()

    r = d2d(env, "jobs", "status", "d2d-test-ok", "--address", address)
    assert r.returncode == 0 and r.stdout.strip() == "SUCCEEDED"
    r = d2d(env, "jobs", "list", "--address", address)
    assert "d2d-test-ok\tSUCCEEDED" in r.stdout


def test_a_failing_job_exits_nonzero_with_its_status(head, tmp_path):
    address, env = head
    r = d2d(env, "submit", "tokenizer", "--input", str(tmp_path / "missing.txt"),
            "--run-dir", str(tmp_path / "run"), "--address", address, "--follow", "--job-id", "d2d-test-bad")
    assert r.returncode == 1
    assert "FAILED" in r.stdout
    r = d2d(env, "jobs", "logs", "d2d-test-bad", "--address", address)
    assert "missing.txt" in r.stdout
