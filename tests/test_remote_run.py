"""Training stages on an `s3://` run directory (moto's S3 server in-process): every artifact,
model folder and Ray Train checkpoint goes through `RunDir`, nothing touches a local run dir.

    python -m pytest tests/test_remote_run.py -q

s3fs takes the endpoint from `AWS_ENDPOINT_URL`; the variables are set before this module's
own Ray starts, so the raylet and every worker it forks see the same store.
"""

from __future__ import annotations

import json
import os

import pytest

from cluster.config import build_config
from tests.conftest import free_port

pytestmark = pytest.mark.multinode  # its own Ray (with the S3 variables), so it runs after the shared one


@pytest.fixture(scope="module")
def s3_run(no_shared_ray, tmp_path_factory):
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    import fsspec

    from cluster.runtime import connect
    from pipeline.runfs import RunDir
    from serving.tiny_model import build_tiny_model

    fsspec.filesystem("s3").mkdir("d2d-test")
    run = RunDir("s3://d2d-test/runs/remote")
    run.upload_dir(build_tiny_model(str(tmp_path_factory.mktemp("base") / "base"), hidden=32, layers=2,
                                    context=128), "base")
    connect(num_cpus=2)
    yield run
    import ray

    ray.shutdown()
    server.stop()
    for k, v in old.items():
        os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def test_sft_then_grpo_on_s3_write_models_metrics_and_checkpoints(s3_run, tmp_path):
    from pipeline.runfs import local_path
    from pipeline.train.grpo import GRPOConfig
    from pipeline.train.grpo import run as run_grpo
    from pipeline.train.sft import SFTConfig
    from pipeline.train.sft import run as run_sft

    root = s3_run.root
    sft = build_config(SFTConfig, "tiny", {"run_dir": root, "identity_n": 20, "arith_n": 40, "max_len": 96,
                                           "max_steps": 3, "checkpoint_every": 2, "eval_every": 1000})
    out = run_sft(sft)
    assert out["artifacts"] == f"{root}/sft" and out["steps"] == 3
    for name in ("config.json", "model.safetensors", "tokenizer.json", "sft.json", "val.jsonl", "loss.png"):
        assert s3_run.exists(f"sft/{name}"), name
    assert [r["step"] for r in s3_run.read_jsonl("sft/metrics.jsonl")] == [1, 2, 3]
    assert s3_run.glob(".ray_train/sft/checkpoint_*"), "Ray Train checkpoints live on the same store"
    assert not os.path.exists(root.replace("s3://", "")), "nothing lands in a local folder named like the URI"

    grpo = build_config(GRPOConfig, "tiny", {"run_dir": root, "max_steps": 2, "checkpoint_every": 1,
                                             "prompts_per_step": 2, "group_size": 2, "max_new_tokens": 4,
                                             "eval_n": 4, "kl_coef": 0.1, "cpus_per_worker": 1,
                                             "ref_num_cpus": 0.5})
    res = run_grpo(grpo)
    assert res["artifacts"] == f"{root}/grpo"
    assert [r["step"] for r in s3_run.read_jsonl("grpo/metrics.jsonl")] == [1, 2]
    assert "kl_loss" in s3_run.read_jsonl("grpo/metrics.jsonl")[-1], "the reference actor read its model from s3"
    assert s3_run.read_json("grpo/eval.json")["heldout_problems"] == 4
    assert s3_run.glob(".ray_train/grpo-train/checkpoint_*")

    # The saved policy is a complete HF folder: a local copy loads with plain transformers.
    from transformers import AutoModelForCausalLM

    folder = local_path(f"{root}/grpo")
    assert AutoModelForCausalLM.from_pretrained(folder).config.vocab_size > 0
    assert json.loads(open(os.path.join(folder, "tokenizer_config.json")).read()).get("chat_template")
