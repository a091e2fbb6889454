"""`d2d bench gpu` (cluster.benchmarks.gpu) on a machine without CUDA: a clean skip, the plan, the
throughput measurement on the CPU. The GPU runs themselves need a CUDA machine."""

from __future__ import annotations

import pytest
import torch

from cluster.benchmarks import gpu as gpu_check


def test_without_cuda_it_skips_at_once_saying_why(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the real check runs instead")
    doc = gpu_check.run_bench(str(tmp_path / "gpu"))
    assert set(doc) == {"skipped"} and "CUDA" in doc["skipped"]
    assert not (tmp_path / "gpu").exists()


def test_plan_adds_fsdp_only_with_two_gpus_and_ends_with_alignment_and_serving():
    assert "fsdp" not in gpu_check.plan(1) and "fsdp" in gpu_check.plan(2)
    for gpus in (1, 2):
        assert gpu_check.plan(gpus)[-2:] == ["alignment", "serve"]
        assert gpu_check.plan(gpus)[:2] == ["pretrain_small", "pretrain_gpt2"]


def test_pretrain_throughput_measures_tokens_per_second_on_cpu():
    got = gpu_check.pretrain_throughput("tiny", steps=4, device="cpu", compile=False, seq_len=32, batch=2)
    assert got["tokens_per_s"] > 0 and got["mfu"] is None and got["bf16"] is False
    assert got["parameters"] > 0 and got["steps"] == 4
