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
    yield
    if ray.is_initialized():
        ray.shutdown()
