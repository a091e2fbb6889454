"""Curation resume: `d2d curate` killed after its first committed shard, rerun, equals an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq
from conftest import ROOT

from cluster.config import build_config
from pipeline.acquire.democrawl import write_demo_crawl
from pipeline.curate.config import CurateConfig


def _rows(run_dir) -> list[dict]:
    files = sorted((run_dir / "curated").glob("part-*.parquet"))
    return sorted(pq.read_table(files).to_pylist(), key=lambda r: r["id"])


def _committed(run_dir) -> list:
    d = run_dir / "curated" / ".shards"
    return [p for p in d.glob("shard-*.json")] if d.exists() else []


def test_killed_run_resumes_to_identical_output(ray_local, tmp_path):
    from pipeline.curate.run import run

    crawl = tmp_path / "crawl"
    write_demo_crawl(crawl, n_pages=40, seed=5, pages_per_file=10)
    common = {"input": str(crawl / "*.warc.gz"), "pii_mode": "regex", "shuffle_partitions": 2}
    killed = tmp_path / "killed"
    cmd = [sys.executable, "-m", "cluster.cli", "curate", "--config", "tiny", "--run-dir", str(killed),
           *[a for k, v in common.items() for a in ("--set", f"{k}={v}")]]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 300
    try:
        while not _committed(killed) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the commit markers, not waiting a guessed time
        assert proc.poll() is None, f"curate exited before the kill: {proc.stderr.read().decode()[-2000:]}"
        assert _committed(killed), "no shard committed within 300 s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # the whole group: driver and its embedded Ray
        proc.wait()
    assert not (killed / "curated" / ".manifest.json").exists()
    done_before = len(_committed(killed))

    resumed = run(build_config(CurateConfig, "tiny", {**common, "run_dir": str(killed)}))
    assert resumed["shards"] == 4 and resumed["shards_run_now"] == 4 - done_before
    fresh_dir = tmp_path / "fresh"
    fresh = run(build_config(CurateConfig, "tiny", {**common, "run_dir": str(fresh_dir)}))
    assert fresh["shards_run_now"] == 4
    assert _rows(killed) == _rows(fresh_dir) and len(_rows(fresh_dir)) > 0
    stats = json.loads((killed / "curated" / ".stats.json").read_text())["stages"]
    assert stats["read"]["docs_in"] == json.loads((fresh_dir / "curated" / ".stats.json").read_text())["stages"]["read"]["docs_in"]
