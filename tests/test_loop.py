"""The generic Ray Train loop (pipeline.train.loop): schedule, batches, DDP training, faults, FSDP2."""

from __future__ import annotations

import json
import pickle
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.runs import SEQ_LEN, write_tiny_run

from pipeline.train.loop import TrainConfig, fit, lr_factor
from pipeline.train.model import build_model, llama_config
from pipeline.train.pretrain import ShardBatches


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("loop") / "run"
    write_tiny_run(d)
    return d


def _rows(folder: Path) -> list[dict]:
    return [json.loads(x) for x in (folder / "metrics.jsonl").read_text().splitlines()]


def _fit(cfg: TrainConfig, run: Path, name: str, **kw):
    manifest = json.loads((run / "tokens/manifest.json").read_text())
    hf = llama_config("tiny", vocab_size=manifest["vocab_size"], seq_len=SEQ_LEN)
    return fit(cfg, model_fn=partial(build_model, hf), out_dir=str(run / name),
               train=ShardBatches(str(run / "tokens"), "train", cfg.batch_size, cfg.seed),
               val=ShardBatches(str(run / "tokens"), "val", cfg.batch_size, cfg.seed, shuffle=False),
               storage_path=str(run / ".ray_train"), name=name, bytes_per_token=2.0, **kw)


def test_lr_warms_up_then_decays_to_min_ratio():
    cfg = TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    f = [lr_factor(s, cfg) for s in range(111)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:-1], f[11:], strict=True))
    assert f[110] == pytest.approx(0.1)


def test_bad_field_is_named():
    with pytest.raises(ValueError, match="grad_accum"):
        TrainConfig(grad_accum=0)
    with pytest.raises(ValueError, match="min_lr_ratio"):
        TrainConfig(min_lr_ratio=2)


def test_batches_are_deterministic_disjoint_across_ranks_and_pickle(tiny_run):
    src = ShardBatches(str(tiny_run / "tokens"), "train", batch_size=4, seed=3)
    n = src.reader.num_sequences
    again = pickle.loads(pickle.dumps(src))
    b = src.batch(5, 1, 2)
    assert torch.equal(b["input_ids"], again.batch(5, 1, 2)["input_ids"])
    assert torch.equal(b["input_ids"][:, 1:], b["labels"][:, :-1])  # labels are the next tokens
    seen = np.concatenate([src.rows(i, r, 2) for i in range(n // 8) for r in range(2)])
    assert len(set(seen.tolist())) == len(seen)  # one epoch: no row twice, across ranks and steps
    other = ShardBatches(str(tiny_run / "tokens"), "train", batch_size=4, seed=4)
    assert not np.array_equal(src.rows(0, 0, 2), other.rows(0, 0, 2))


def test_two_workers_learn_and_rerun_resumes(ray_local, tiny_run):
    cfg = TrainConfig(num_workers=2, max_steps=40, batch_size=8, lr=3e-3, warmup_steps=5,
                      checkpoint_every=20, eval_every=20, report_every=20, grad_accum=2)
    out = _fit(cfg, tiny_run, "ddp")
    rows = _rows(tiny_run / "ddp")
    assert [r["step"] for r in rows] == list(range(1, 41))
    assert rows[-1]["loss"] < 0.6 * rows[0]["loss"]
    evals = [r for r in rows if "val_loss" in r]
    assert [r["step"] for r in evals] == [20, 40] and evals[1]["val_loss"] < evals[0]["val_loss"]
    assert evals[-1]["val_bpb"] == pytest.approx(evals[-1]["val_loss"] / np.log(2) / 2.0, rel=1e-4)
    assert out["checkpoint"] and out["metrics"]["step"] == 40

    _fit(TrainConfig(**{**cfg.__dict__, "max_steps": 50}), tiny_run, "ddp")
    rows2 = _rows(tiny_run / "ddp")
    assert rows2[:40] == rows and [r["step"] for r in rows2[40:]] == list(range(41, 51))
    assert rows2[40]["loss"] < 0.6 * rows[0]["loss"]  # continues the curve: no jump back up


def test_worker_failure_resumes_from_last_checkpoint(ray_local, tiny_run):
    cfg = TrainConfig(num_workers=2, max_steps=16, batch_size=4, checkpoint_every=5, eval_every=0,
                      report_every=5, max_failures=1, fail_at_step=13, fail_rank=1)
    _fit(cfg, tiny_run, "faulty")
    assert [r["step"] for r in _rows(tiny_run / "faulty")] == list(range(1, 17))
    events = [json.loads(x) for x in (tiny_run / "faulty/events.jsonl").read_text().splitlines()]
    assert [e["step"] for e in events if e["event"] == "resumed"] == [10]


def test_fsdp2_on_gloo_trains_and_saves_a_full_model(ray_local, tiny_run, tmp_path):
    saved = tmp_path / "fsdp-model"
    cfg = TrainConfig(num_workers=2, strategy="fsdp", max_steps=6, batch_size=4, checkpoint_every=3,
                      eval_every=0, report_every=3, warmup_steps=1)
    from transformers import AutoModelForCausalLM, PreTrainedModel

    # finalize must import in a Ray worker: a library function, not one defined in this test module.
    _fit(cfg, tiny_run, "fsdp", finalize=partial(PreTrainedModel.save_pretrained, save_directory=str(saved)))
    rows = _rows(tiny_run / "fsdp")
    assert [r["step"] for r in rows] == list(range(1, 7)) and rows[-1]["loss"] < rows[0]["loss"]
    model = AutoModelForCausalLM.from_pretrained(saved)
    assert sum(p.numel() for p in model.parameters()) > 0


def test_use_gpu_true_always_asks_ray_for_gpus_and_auto_falls_back_saying_so(ray_local, tiny_run, capsys):
    """`true` must reach the ScalingConfig even on a cluster with no GPU now (an autoscaler adds
    one); `auto` trains on CPU there and says so. The shared test Ray has no GPU."""
    from cluster.config import build_config
    from pipeline.train.grpo import GRPOConfig
    from pipeline.train.loop import resolve_gpu, trainer

    manifest = json.loads((tiny_run / "tokens/manifest.json").read_text())
    hf = llama_config("tiny", vocab_size=manifest["vocab_size"], seq_len=SEQ_LEN)
    t = trainer(TrainConfig(use_gpu=True), model_fn=partial(build_model, hf), out_dir=str(tiny_run / "gpu"),
                train=ShardBatches(str(tiny_run / "tokens"), "train", 8, 0),
                storage_path=str(tiny_run / ".ray_train"), name="gpu")
    assert t.scaling_config.use_gpu is True
    assert resolve_gpu("auto", "sft") is False
    assert "[sft] use_gpu=auto: no GPU in the cluster now, training on CPU" in capsys.readouterr().out
    assert build_config(GRPOConfig, None, {"use_gpu": "auto"}).use_gpu == "auto"
    assert build_config(GRPOConfig, None, {"use_gpu": "true"}).use_gpu is True
