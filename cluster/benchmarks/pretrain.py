"""`d2d bench pretrain`: Ray Train overhead and scaling, and the nanoGPT baby-GPT quality anchor.

    d2d bench pretrain --run-dir bench          # --quick for a smoke run

1. Tokens/s of one model and batch: a bare single-process PyTorch loop, then the same
   step on Ray Train (`pipeline.train.loop.fit`) with 1 and 2 workers (1 CPU each).
2. Quality anchor: char-level tinyshakespeare (first 90% train, last 10% val), the
   nanoGPT CPU baby GPT's shape (4 layers, 4 heads, width 128, context 64, batch 12) as a
   Llama, trained by our loop for the same wall-clock budget (116 s), then bits per
   character on the whole val split = loss per char / ln 2 (char-level: a token is a char).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch

from pipeline.train.loop import TrainConfig, causal_lm_loss, fit, lr_factor, optimizer_groups
from pipeline.train.model import build_model, llama_config

SHAKESPEARE = Path(__file__).resolve().parents[3] / "shared" / "data" / "text" / "tinyshakespeare.txt"
NANOGPT_BITS_PER_CHAR = 2.72
BUDGET_S = 116.0


class Windows:
    """Batches of `seq_len` windows from a 1-D token array, deterministic in (index, rank, world, seed).

    `random=True`: nanoGPT's get_batch (random offsets). `random=False`: consecutive
    non-overlapping windows (a full pass over a validation split).
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0, random: bool = True):
        self.tokens, self.seq_len, self.batch_size, self.seed, self.random = tokens, seq_len, batch_size, seed, random

    def batch(self, index: int, rank: int, world_size: int) -> dict:
        n = len(self.tokens) - self.seq_len - 1
        if self.random:
            starts = np.random.default_rng([self.seed, index, rank, world_size]).integers(0, n, self.batch_size)
        else:
            first = (index * world_size + rank) * self.batch_size
            starts = ((first + np.arange(self.batch_size)) * self.seq_len) % n
        rows = torch.from_numpy(np.stack([self.tokens[s: s + self.seq_len + 1] for s in starts]).astype(np.int64))
        return {"input_ids": rows[:, :-1], "labels": rows[:, 1:]}


def bare_tokens_per_s(model_fn, source: Windows, cfg: TrainConfig, steps: int, threads: int = 1,
                      device: str = "cpu") -> float:
    """The same step as the loop, in this process, no Ray, no DDP (bf16 autocast on CUDA, as the loop)."""
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    model = model_fn().to(device)
    opt = torch.optim.AdamW(optimizer_groups(model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas,
                            fused=device == "cuda")
    cuda = device == "cuda"
    times = []
    for step in range(steps):
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = cfg.lr * lr_factor(step, cfg)
        batch = {k: v.to(device, non_blocking=True) for k, v in source.batch(step, 0, 1).items()}
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=cuda):
            loss, _ = causal_lm_loss(model, batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    # The statistic the loop reports: tokens over the wall time of each log window of
    # `cfg.log_every` steps, the median over the windows after warm-up.
    w = cfg.log_every
    windows = [sum(times[i:i + w]) for i in range(steps // 4, steps - w + 1, w)]
    return source.batch_size * source.seq_len * w / statistics.median(windows)


def _rows(out_dir: str) -> list[dict]:
    return [json.loads(x) for x in Path(out_dir, "metrics.jsonl").read_text().splitlines() if x.strip()]


def ray_tokens_per_s(cfg: TrainConfig, model_fn, source: Windows, out: Path, name: str) -> float:
    """The loop's own tokens_per_s on Ray Train: the median over the log windows after warm-up."""
    fit(cfg, model_fn=model_fn, train=source, out_dir=str(out / name), storage_path=str(out / ".ray_train"),
        name=f"{name}-{time.time_ns()}")
    rows = _rows(str(out / name))
    return statistics.median(r["tokens_per_s"] for r in rows[len(rows) // 4:])


def throughput(out: Path, quick: bool) -> dict:
    vocab, seq_len, batch = 512, 128, 16
    hf = llama_config("tiny", vocab_size=vocab, seq_len=seq_len, hidden_size=128, intermediate_size=352,
                      num_hidden_layers=4)
    tokens = np.random.default_rng(0).integers(0, vocab, 200_000).astype(np.int64)
    steps = 20 if quick else 60
    # Log every 5 steps, as a real run logs every few steps (nanoGPT: 10), not every step.
    cfg = TrainConfig(num_workers=1, batch_size=batch, max_steps=steps, eval_every=0, checkpoint_every=steps,
                      report_every=steps, log_every=5, warmup_steps=5, lr=1e-3)
    model_fn = partial(build_model, hf)
    bare = bare_tokens_per_s(model_fn, Windows(tokens, seq_len, batch), cfg, steps)
    ray_tps = {w: ray_tokens_per_s(TrainConfig(**{**cfg.__dict__, "num_workers": w}), model_fn,
                                   Windows(tokens, seq_len, batch), out, f"throughput-{w}w") for w in (1, 2)}
    return {"model": "llama 4x128, seq 128, batch 16/worker", "bare_tokens_per_s": round(bare),
            "ray_1_worker_tokens_per_s": round(ray_tps[1]), "ray_2_workers_tokens_per_s": round(ray_tps[2]),
            "overhead_per_worker": round(1 - ray_tps[1] / bare, 3),
            "speedup_2_vs_1": round(ray_tps[2] / ray_tps[1], 2),
            "targets": {"overhead_per_worker_max": 0.10, "speedup_2_vs_1_min": 1.6}}


def shakespeare_anchor(out: Path, quick: bool, budget_s: float = BUDGET_S) -> dict:
    if not SHAKESPEARE.exists():
        return {"skipped": f"{SHAKESPEARE} not found"}
    text = SHAKESPEARE.read_text()
    chars = sorted(set(text))
    table = {c: i for i, c in enumerate(chars)}
    data = np.array([table[c] for c in text], dtype=np.int64)
    split = int(0.9 * len(data))
    train, val = data[:split], data[split:]
    seq_len, batch = 64, 12
    budget = 20.0 if quick else budget_s
    hf = llama_config("tiny", vocab_size=len(chars), seq_len=seq_len, hidden_size=128, intermediate_size=344,
                      num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4)
    model_fn = partial(build_model, hf)
    base = TrainConfig(num_workers=1, cpus_per_worker=1, batch_size=batch, lr=2e-3, warmup_steps=50,
                       min_lr_ratio=0.1, weight_decay=0.1, max_steps=30)
    # Calibrate: steps that fit the budget at this machine's current speed, so cosine decay completes.
    # Tiny matmuls often run slower on 2 threads than on 1 (and collapse when the other core is
    # busy), so the worker gets whichever thread count is faster here and now.
    speed = {t: bare_tokens_per_s(model_fn, Windows(train, seq_len, batch), base, 30, threads=t) for t in (1, 2)}
    threads = max(speed, key=speed.get)
    tps = speed[threads]
    base = TrainConfig(**{**base.__dict__, "cpus_per_worker": threads})
    steps = max(50, int(0.9 * budget * tps / (batch * seq_len)))
    val_batch = 128
    n_val = (len(val) - 1) // seq_len
    cfg = TrainConfig(**{**base.__dict__, "max_steps": steps, "time_limit_s": budget, "eval_every": 0,
                         "eval_batches": math.ceil(n_val / val_batch), "checkpoint_every": steps,
                         "report_every": steps, "log_every": 50})
    started = time.time()
    fit(cfg, model_fn=model_fn, train=Windows(train, seq_len, batch),
        val=Windows(val, seq_len, val_batch, random=False), out_dir=str(out / "shakespeare"),
        storage_path=str(out / ".ray_train"), name=f"shakespeare-{time.time_ns()}")
    rows = _rows(str(out / "shakespeare"))
    last = rows[-1]
    bpc = last["val_loss"] / math.log(2)
    return {"model": "llama 4 layers, 4 heads, width 128, context 64, batch 12, char-level",
            "calibration_tokens_per_s": {f"{t}_threads": round(v) for t, v in speed.items()}, "threads": threads,
            "planned_steps": steps, "steps": last["step"], "train_s": round(last["elapsed_s"], 1),
            "wall_s_with_ray_startup": round(time.time() - started, 1), "val_loss_nats_per_char": round(last["val_loss"], 4),
            "val_bits_per_char": round(bpc, 4), "nanogpt_bits_per_char": NANOGPT_BITS_PER_CHAR,
            "meets_anchor": bpc <= NANOGPT_BITS_PER_CHAR}


def gpu_throughput(out: Path, quick: bool) -> dict:
    """On a GPU: the `small` preset (~25M) at context 512, bf16, tokens/s and MFU, bare vs Ray Train."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device on this machine"}
    from pipeline.train.model import mfu, peak_flops

    vocab, seq_len, batch = 8192, 512, 32
    hf = llama_config("small", vocab_size=vocab, seq_len=seq_len)
    tokens = np.random.default_rng(0).integers(0, vocab, 2_000_000).astype(np.int64)
    steps = 30 if quick else 100
    cfg = TrainConfig(num_workers=1, use_gpu=True, batch_size=batch, max_steps=steps, eval_every=0,
                      checkpoint_every=steps, report_every=steps, log_every=10, warmup_steps=5, lr=1e-3)
    model_fn = partial(build_model, hf)
    bare = bare_tokens_per_s(model_fn, Windows(tokens, seq_len, batch), cfg, steps, device="cuda")
    ray_tps = ray_tokens_per_s(cfg, model_fn, Windows(tokens, seq_len, batch), out, "gpu-1w")
    name = torch.cuda.get_device_name(0)
    peak = peak_flops(name)
    return {"device": name, "model": "small preset, context 512, batch 32, bf16",
            "bare_tokens_per_s": round(bare), "ray_1_worker_tokens_per_s": round(ray_tps),
            "overhead_per_worker": round(1 - ray_tps / bare, 3),
            "peak_bf16_flops": peak,
            "mfu_bare": round(mfu(hf, seq_len, bare, peak), 3) if peak else None,
            "mfu_ray": round(mfu(hf, seq_len, ray_tps, peak), 3) if peak else None}


def run_bench(out_dir: str, quick: bool) -> dict:
    """Ray is connected by `d2d bench` (embedded local, or --address)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return {"throughput": throughput(out, quick), "shakespeare": shakespeare_anchor(out, quick),
            "gpu": gpu_throughput(out, quick), "cores": os.cpu_count()}
