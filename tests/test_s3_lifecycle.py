"""The tiny lifecycle on an object store: `d2d run --config tiny --run-dir s3://...` against a
moto S3 server on 127.0.0.1, credentials and endpoint from the usual AWS variables. Every
stage's artifacts and Ray Train checkpoints land on the store; a pretraining worker fails at
step 15 and training resumes from the step-10 checkpoint on the store.

    python -m pytest tests/test_s3_lifecycle.py -q
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ROOT, make_bucket
from helpers.runs import failing_tiny_recipe

pytestmark = pytest.mark.multinode  # its own embedded Ray, in a subprocess


def test_tiny_lifecycle_on_s3_resumes_from_its_checkpoint_on_the_store(no_shared_ray, s3_server, tmp_path):
    import s3fs

    run = make_bucket(s3_server, "d2d-lifecycle") + "/tiny"
    env = {**os.environ, **s3_server, "RAY_AUTH_MODE": "disabled", "D2D_PROGRESS": "0"}
    env.pop("RAY_ADDRESS", None)
    recipe = failing_tiny_recipe(tmp_path / "tiny-failing.yaml")
    r = subprocess.run([sys.executable, "-m", "cluster.cli", "run", "--config", recipe, "--run-dir", run,
                        "--set", "ray_num_cpus=2"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=1200)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    assert "6 stages in" in out
    assert s3_server["AWS_SECRET_ACCESS_KEY"] not in out

    fs = s3fs.S3FileSystem(endpoint_url=s3_server["AWS_ENDPOINT_URL"], key=s3_server["AWS_ACCESS_KEY_ID"],
                           secret=s3_server["AWS_SECRET_ACCESS_KEY"])
    root = run.removeprefix("s3://")

    def jsonl(rel):
        return [json.loads(x) for x in fs.cat_file(f"{root}/{rel}").decode().splitlines() if x.strip()]

    for stage in ("curate", "tokenizer", "tokenize", "pretrain", "sft", "report"):
        assert json.loads(fs.cat_file(f"{root}/.d2d/{stage}.json"))["config_hash"], stage
    for rel in ("curated/.manifest.json", "tokenizer/tokenizer.json", "tokens/manifest.json",
                "base/model.safetensors", "sft/model.safetensors", "report.md"):
        assert fs.exists(f"{root}/{rel}"), rel
    assert fs.glob(f"{root}/.ray_train/base/checkpoint_*"), "Ray Train checkpoints live on the store"
    assert [e["step"] for e in jsonl("base/events.jsonl") if e["event"] == "resumed"] == [10]
    assert [m["step"] for m in jsonl("base/metrics.jsonl")] == list(range(1, 21))
    assert not (ROOT / "d2d-lifecycle").exists(), "nothing lands in a local folder named like the bucket"
