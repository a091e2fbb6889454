"""A curated folder is a parquet dataset as it is: pandas, pyarrow.dataset, Ray Data and
Hugging Face `datasets` read RUN/curated directly (metadata and work folders are dot-prefixed,
which all four skip), and each sees exactly the documents the manifest counts."""

from __future__ import annotations

import json

import pytest

from cluster.config import build_config
from pipeline.curate.config import CurateConfig


@pytest.fixture(scope="module")
def curated(tmp_path_factory):
    from cluster.runtime import connect
    from pipeline.curate.run import run

    connect(num_cpus=2)
    run_dir = tmp_path_factory.mktemp("readers")
    # keep_rejects: the dropped documents (another schema) sit in the same folder tree.
    cfg = build_config(CurateConfig, "tiny", {"input": "demo://?pages=40&seed=5&per_file=20", "run_dir": str(run_dir),
                                              "shuffle_partitions": 2, "keep_rejects": True})
    run(cfg)
    cur = run_dir / "curated"
    manifest = json.loads((cur / ".manifest.json").read_text())
    assert (cur / ".stats.json").exists() and list((cur / ".rejects").glob("*.parquet"))
    assert list((cur / ".shards").glob("*.parquet")), "the per-shard work files are there to be skipped"
    return cur, manifest["docs_out"]


def test_pandas_reads_the_folder(curated):
    import pandas as pd

    cur, n = curated
    df = pd.read_parquet(cur)
    assert len(df) == n > 0 and "text" in df.columns and "reason" not in df.columns


def test_pyarrow_dataset_reads_the_folder(curated):
    import pyarrow.dataset as ds

    cur, n = curated
    dataset = ds.dataset(str(cur), format="parquet")
    assert dataset.count_rows() == n
    assert all("/." not in f[len(str(cur)):] for f in dataset.files)


def test_ray_data_reads_the_folder(ray_local, curated):
    import ray.data

    cur, n = curated
    assert ray.data.read_parquet(str(cur)).count() == n


def test_hf_datasets_reads_the_folder(curated):
    datasets = pytest.importorskip("datasets")
    cur, n = curated
    d = datasets.load_dataset("parquet", data_dir=str(cur), split="train", cache_dir=str(cur.parent / "hf-cache"))
    assert d.num_rows == n and "text" in d.column_names
