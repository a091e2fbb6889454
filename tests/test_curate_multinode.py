"""Curation on a `ray.cluster_utils.Cluster` (head + 3 workers): shards spread over the worker nodes, one worker
node is removed mid-run, and the output still equals a single-node run's."""

from __future__ import annotations

import dataclasses
import threading

import pyarrow.parquet as pq
import pytest

from cluster.config import build_config
from pipeline.acquire.democrawl import write_demo_crawl
from pipeline.curate.config import CurateConfig

pytestmark = pytest.mark.multinode
MB = 1024 * 1024


def _rows(run_dir) -> list[dict]:
    return sorted(pq.read_table(sorted((run_dir / "curated").glob("part-*.parquet"))).to_pylist(), key=lambda r: r["id"])


def test_curate_spreads_over_nodes_and_matches_single_node(no_shared_ray, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    from pipeline.curate.run import run

    crawl = tmp_path / "crawl"
    write_demo_crawl(crawl, n_pages=40, seed=7, pages_per_file=10)
    common = {"input": str(crawl / "*.warc.gz"), "pii_mode": "regex", "shuffle_partitions": 2}

    ray.init(address="local", num_cpus=2, object_store_memory=150 * MB, include_dashboard=False)
    try:
        single = run(build_config(CurateConfig, "tiny", {**common, "run_dir": str(tmp_path / "single")}))
    finally:
        ray.shutdown()
    assert single["shard_nodes"] == 1

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 100 * MB})
    try:
        nodes = [cluster.add_node(num_cpus=1, resources={"worker": 2}, object_store_memory=100 * MB) for _ in range(3)]
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        multi_dir = tmp_path / "multi"
        cfg = build_config(CurateConfig, "tiny", {**common, "run_dir": str(multi_dir)})
        removed = threading.Event()
        done = threading.Event()

        def remove_a_node_after_first_commit():
            # Polls the commit markers (no guessed sleep), then takes a worker node away mid-run.
            shards = multi_dir / "curated" / ".shards"
            while not done.is_set() and not (shards.exists() and any(shards.glob("shard-*.json"))):
                done.wait(0.05)
            if not done.is_set():
                cluster.remove_node(nodes[-1], allow_graceful=False)
                removed.set()

        killer = threading.Thread(target=remove_a_node_after_first_commit)
        killer.start()
        try:
            multi = run(dataclasses.replace(cfg, ray_remote_args={"resources": {"worker": 1}}))  # dict: no CLI form
        finally:
            done.set()
            killer.join()
        assert removed.is_set(), "the run finished before a node could be removed"
        assert multi["shards"] == 4 and multi["shard_nodes"] >= 2
        alive = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("worker")}
        assert len(alive) == 2
        assert _rows(multi_dir) == _rows(tmp_path / "single") and multi["docs_out"] == single["docs_out"] > 0
    finally:
        ray.shutdown()
        cluster.shutdown()
