"""Curation on a 3-node `ray.cluster_utils.Cluster`: shards spread over the worker nodes, output equals one node's."""

from __future__ import annotations

import dataclasses

import pyarrow.parquet as pq
import pytest

from cluster.config import build_config
from pipeline.acquire.democrawl import write_demo_crawl
from pipeline.curate.config import CurateConfig

pytestmark = [pytest.mark.multinode, pytest.mark.skip(reason="not yet passing within CI time: each curate run spends minutes in the near-dedup connected-components rounds (issue 3 note)")]
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

    ray.init(num_cpus=2, object_store_memory=150 * MB, include_dashboard=False)
    try:
        single = run(build_config(CurateConfig, "tiny", {**common, "run_dir": str(tmp_path / "single")}))
    finally:
        ray.shutdown()
    assert single["shard_nodes"] == 1

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 100 * MB})
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1, resources={"worker": 2}, object_store_memory=100 * MB)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address)
        multi_dir = tmp_path / "multi"
        cfg = build_config(CurateConfig, "tiny", {**common, "run_dir": str(multi_dir)})
        multi = run(dataclasses.replace(cfg, ray_remote_args={"resources": {"worker": 1}}))  # dict: no CLI form
        assert multi["shards"] == 4 and multi["shard_nodes"] == 2
        workers = {n["NodeID"] for n in ray.nodes() if n["Resources"].get("worker")}
        assert len(workers) == 2
        assert _rows(multi_dir) == _rows(tmp_path / "single") and multi["docs_out"] == single["docs_out"] > 0
    finally:
        ray.shutdown()
        cluster.shutdown()
