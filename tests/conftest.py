"""Shared fixtures: one real local Ray for the whole session, paths to the shared data.

Tests that need their own cluster (Ray Jobs head, `ray.cluster_utils.Cluster`) are
marked `multinode` and run last, after the shared Ray is shut down.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("D2D_PROGRESS", "0")


def shared(rel: str) -> Path:
    """A file under ../shared/data, or skip the test when the folder is absent."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"shared data not available: {p}")
    return p


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda it: 1 if it.get_closest_marker("multinode") else 0)


@pytest.fixture(scope="session")
def _ray_session():
    from cluster.runtime import connect

    connect(num_cpus=2)
    yield
    import ray

    ray.shutdown()


@pytest.fixture
def ray_local(_ray_session, request):
    """The shared real local Ray (num_cpus=2). Reconnects if a multinode test shut it down."""
    import ray

    if not ray.is_initialized():
        from cluster.runtime import connect

        connect(num_cpus=2)
    return ray


@pytest.fixture
def run_dir(tmp_path) -> Path:
    d = tmp_path / "run"
    d.mkdir()
    return d


@pytest.fixture(scope="module")
def no_shared_ray():
    """For tests that start their own cluster: a driver can only hold one Ray connection."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    os.environ.pop("RAY_ADDRESS", None)  # left by an earlier test's cluster; ray.init() would join it
    yield
    if ray.is_initialized():
        ray.shutdown()
    os.environ.pop("RAY_ADDRESS", None)


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """A real S3-compatible server (moto's standalone `moto_server`) on 127.0.0.1.

    Yields the environment that points s3fs, pyarrow and boto3 at it: the usual AWS
    variables, dummy credentials. Tests pass it to subprocesses and Ray jobs; nothing
    here changes this process's environment.
    """
    import subprocess
    import sys
    import time
    import urllib.request

    port = free_port()
    exe = Path(sys.executable).with_name("moto_server")
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(exe), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=out)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"moto_server did not come up: {log.read_text()[-1000:]}")
            time.sleep(0.2)
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing-secret",
           "AWS_DEFAULT_REGION": "us-east-1"}
    yield env
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def make_bucket(env: dict, name: str) -> str:
    import boto3

    boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
                 aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"], region_name=env["AWS_DEFAULT_REGION"]
                 ).create_bucket(Bucket=name)
    return f"s3://{name}"
