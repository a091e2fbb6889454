"""`d2d pretrain` and `d2d generate` end to end through the CLI, on the shared local Ray."""

from __future__ import annotations

import json

import pytest
from helpers.runs import write_tiny_run

from cluster.cli import main


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, _ray_session):
    run = tmp_path_factory.mktemp("pretrain") / "run"
    write_tiny_run(run)
    args = ["pretrain", "--config", "tiny", "--run-dir", str(run), "--set", "checkpoint_every=10",
            "--set", "eval_every=10", "--set", "samples=1", "--set", "sample_tokens=8"]
    assert main(args + ["--set", "max_steps=20"]) == 0
    first = [json.loads(x) for x in (run / "base/metrics.jsonl").read_text().splitlines()]
    assert main(args + ["--set", "max_steps=30"]) == 0
    return run, first


def test_pretrain_writes_a_loadable_base_model_with_metrics_and_plot(pretrained):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, first = pretrained
    base = run / "base"
    model = AutoModelForCausalLM.from_pretrained(base)
    tok = AutoTokenizer.from_pretrained(base)
    assert model.config.vocab_size == len(tok)
    assert (base / "loss.png").stat().st_size > 1000
    assert [r["step"] for r in first] == list(range(1, 21)) and first[-1]["loss"] < first[0]["loss"]
    summary = json.loads((base / "pretrain.json").read_text())
    assert summary["model"]["parameters"] == sum(p.numel() for p in model.parameters())
    assert json.loads((base / "samples.json").read_text())[0]["prompt"]


def test_rerun_with_more_steps_resumes_from_the_saved_step(pretrained):
    run, first = pretrained
    rows = [json.loads(x) for x in (run / "base/metrics.jsonl").read_text().splitlines()]
    assert rows[:20] == first and rows[20]["step"] == 21 and rows[-1]["step"] == 30
    events = [json.loads(x) for x in (run / "base/events.jsonl").read_text().splitlines()]
    resumed = [e for e in events if e["event"] == "resumed"]
    assert resumed[-1] == {**resumed[-1], "event": "resumed", "step": 20}
    assert [e["step"] for e in events if e["event"] == "workers"][-1] == 20  # where each start ran


def test_generate_streams_a_seeded_continuation(pretrained, capsys):
    run, _ = pretrained
    cmd = ["generate", "--model", str(run / "base"), "--prompt", "the cat", "--max-tokens", "6", "--seed", "3"]
    assert main(cmd) == 0
    once = capsys.readouterr().out
    assert main(cmd) == 0
    assert once.startswith("the cat") and len(once.strip()) > len("the cat")
    assert capsys.readouterr().out == once


def test_unknown_set_key_fails_naming_it(tmp_path, capsys):
    assert main(["pretrain", "--run-dir", str(tmp_path), "--set", "max_stepz=5"]) == 2
    assert "max_stepz" in capsys.readouterr().err
    assert main(["pretrain", "--run-dir", str(tmp_path), "--set", "tune=warmup=uniform:1:2"]) == 2


def test_mfu_and_gpu_peaks_by_name():
    """MFU = FLOPs/token x tokens/s / peak; the peak is looked up by whole words of the CUDA name."""
    from pipeline.train.model import flops_per_token, llama_config, mfu, peak_flops

    cfg = llama_config("tiny", vocab_size=300, seq_len=64)
    per_token = flops_per_token(cfg, 64)
    assert mfu(cfg, 64, tokens_per_s=1000.0, peak=per_token * 4000.0) == pytest.approx(0.25)
    assert peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert peak_flops("NVIDIA A10G") == 70e12 and peak_flops("NVIDIA A10") == 125e12
    assert peak_flops("NVIDIA L40S") == 362e12 and peak_flops("NVIDIA L4") == 121e12
    assert peak_flops("Intel Xeon CPU") is None
