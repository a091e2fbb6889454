"""`d2d bench gpu`: the GPU paths of training and serving, checked by one script in under 8 minutes.

    python -m cluster.benchmarks.gpu bench/gpu       # writes bench/gpu/gpu.json (`d2d bench gpu` once registered)

On a CUDA machine, in order, each with a step budget (never a time budget):
1. pretrain throughput of the `small` and `gpt2` presets, bf16 autocast + torch.compile, fused
   AdamW: tokens/s and MFU against the device's bf16 peak (bare PyTorch, one GPU);
2. the same `small` step on Ray Train (`loop.fit`, use_gpu, NCCL): tokens/s and overhead;
3. 2-rank FSDP2 on Ray Train, when two GPUs are present;
4. alignment on a tiny chat model, every model on the GPU: SFT, 20 GRPO steps with the
   reference actor (KL on), a 10-step reward model, 5 PPO steps whose reference and reward
   actors share the GPU: the device paths of the RL update, sampling and actors;
5. the serving engine at concurrency 8 and 32 (`cluster.benchmarks.serve.run_bench`, quick): tokens/s.
A check that fails records its error and the rest still run. Without CUDA it returns
`{"skipped": ...}` at once, naming why.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import torch

#: Steps per check: sized so the whole script stays under 8 minutes on one H100/H200-class GPU.
STEPS = {"pretrain_small": 60, "pretrain_gpt2": 40, "ray_small": 60, "fsdp": 30, "sft": 40, "grpo": 20, "ppo": 5}
SEQ_LEN, BATCH, VOCAB = 512, 16, 8192


def plan(gpus: int) -> list[str]:
    """The checks that run on a machine with `gpus` CUDA devices, in order."""
    checks = ["pretrain_small", "pretrain_gpt2", "ray_small"]
    if gpus >= 2:
        checks.append("fsdp")
    return checks + ["alignment", "serve"]


def pretrain_throughput(preset: str, steps: int, device: str = "cuda", compile: bool = True,
                        seq_len: int = SEQ_LEN, batch: int = BATCH) -> dict:
    """Bare-loop tokens/s (median after a quarter of warm-up steps) and MFU of one preset."""
    import numpy as np

    from cluster.benchmarks.pretrain import Windows, bare_tokens_per_s
    from pipeline.train.loop import TrainConfig
    from pipeline.train.model import build_model, describe, llama_config, mfu, peak_flops

    hf = llama_config(preset, vocab_size=VOCAB, seq_len=seq_len)
    tokens = np.random.default_rng(0).integers(0, VOCAB, 4 * steps * batch * seq_len + seq_len + 2)
    cfg = TrainConfig(batch_size=batch, max_steps=steps, log_every=max(1, steps // 8), warmup_steps=2)

    def model_fn():
        model = build_model(hf)
        return torch.compile(model) if compile else model

    tps = bare_tokens_per_s(model_fn, Windows(tokens.astype(np.int64), seq_len, batch), cfg, steps, device=device)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    peak = peak_flops(name) if device == "cuda" else None
    return {"preset": preset, "parameters": describe(hf, seq_len)["parameters"], "steps": steps,
            "tokens_per_s": round(tps), "mfu": round(mfu(hf, seq_len, tps, peak), 3) if peak else None,
            "device": name, "bf16": device == "cuda", "compile": compile}


def _ray_fit(out: Path, name: str, steps: int, workers: int, strategy: str) -> dict:
    import statistics
    from functools import partial

    import numpy as np

    from cluster.benchmarks.pretrain import Windows
    from pipeline.train.loop import TrainConfig, fit
    from pipeline.train.model import build_model, llama_config

    hf = llama_config("small", vocab_size=VOCAB, seq_len=SEQ_LEN)
    tokens = np.random.default_rng(0).integers(0, VOCAB, 2_000_000).astype(np.int64)
    cfg = TrainConfig(num_workers=workers, use_gpu=True, strategy=strategy, compile=True, batch_size=BATCH,
                      max_steps=steps, eval_every=0, checkpoint_every=steps, report_every=steps, log_every=5,
                      warmup_steps=5)
    fit(cfg, model_fn=partial(build_model, hf), train=Windows(tokens, SEQ_LEN, BATCH), out_dir=str(out / name),
        storage_path=str(out / ".ray_train"), name=f"{name}-{time.time_ns()}")
    rows = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return {"workers": workers, "strategy": strategy, "steps": rows[-1]["step"],
            "tokens_per_s": round(statistics.median(r["tokens_per_s"] for r in rows[len(rows) // 4:]))}


def _alignment(out: Path) -> dict:
    """SFT, GRPO and PPO on a tiny chat model with every model on the GPU; returns each stage's figures."""
    from pipeline.train import grpo, ppo, reward, sft
    from serving.tiny_model import build_tiny_model

    def build_config(cls, preset: str, fields: dict):
        return cls(**{**cls.presets[preset], **fields})

    run = out / "align"
    build_tiny_model(str(run / "base"), hidden=256, layers=4)
    res = {}
    t0 = time.time()
    res["sft"] = sft.run(build_config(sft.SFTConfig, "tiny", {"run_dir": str(run), "use_gpu": True,
                                                              "max_steps": STEPS["sft"], "eval_every": 1000}))
    res["sft"]["seconds"] = round(time.time() - t0, 1)
    t0 = time.time()
    res["grpo"] = grpo.run(build_config(grpo.GRPOConfig, "tiny", {
        "run_dir": str(run), "use_gpu": True, "max_steps": STEPS["grpo"], "kl_coef": 0.04, "ref_num_gpus": 0.2,
        "checkpoint_every": STEPS["grpo"], "eval_n": 50}))
    res["grpo"]["seconds"] = round(time.time() - t0, 1)
    pairs = run / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?", "chosen": f"The answer is {i + 1}.",
                                         "rejected": "No idea."}) + "\n" for i in range(64)))
    reward.run(build_config(reward.RewardConfig, "tiny", {"run_dir": str(run), "use_gpu": True, "max_steps": 10,
                                                          "pairs": str(pairs), "eval_n": 8}))
    t0 = time.time()
    res["ppo"] = ppo.run(build_config(ppo.PPOConfig, "tiny", {
        "run_dir": str(run), "use_gpu": True, "max_steps": STEPS["ppo"], "prompts": str(pairs),
        "ref_num_gpus": 0.2, "reward_num_gpus": 0.2, "checkpoint_every": STEPS["ppo"]}))
    res["ppo"]["seconds"] = round(time.time() - t0, 1)
    return res


def run_bench(out_dir: str, quick: bool = False) -> dict:
    """Every check of `plan` on this machine's GPUs; `{"skipped": why}` without CUDA."""
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device (torch.cuda.is_available() is False): the GPU check needs a CUDA machine"}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    doc: dict = {"device": torch.cuda.get_device_name(0), "gpus": gpus, "plan": plan(gpus), "checks": {}}
    runners = {
        "pretrain_small": lambda: pretrain_throughput("small", STEPS["pretrain_small"]),
        "pretrain_gpt2": lambda: pretrain_throughput("gpt2", STEPS["pretrain_gpt2"]),
        "ray_small": lambda: _ray_fit(out, "ray-small", STEPS["ray_small"], 1, "ddp"),
        "fsdp": lambda: _ray_fit(out, "fsdp-2", STEPS["fsdp"], 2, "fsdp"),
        "alignment": lambda: _alignment(out),
        "serve": lambda: _serve(out),
    }
    started = time.time()
    for name in doc["plan"]:
        t0 = time.time()
        try:
            doc["checks"][name] = runners[name]()
        except Exception as e:  # noqa: BLE001 — a failed check is a result; the others still run
            doc["checks"][name] = {"error": f"{type(e).__name__}: {e}"}
        doc["checks"][name].setdefault("seconds", round(time.time() - t0, 1))
        print(f"[bench gpu] {name}: {json.dumps(doc['checks'][name], default=str)[:300]}", flush=True)
    small, ray_small = doc["checks"].get("pretrain_small", {}), doc["checks"].get("ray_small", {})
    if small.get("tokens_per_s") and ray_small.get("tokens_per_s"):
        doc["ray_train_overhead"] = round(1 - ray_small["tokens_per_s"] / small["tokens_per_s"], 3)
    doc["total_s"] = round(time.time() - started, 1)
    (out / "gpu.json").write_text(json.dumps(doc, indent=2, default=str) + "\n")
    return doc


def _serve(out: Path) -> dict:
    from cluster.benchmarks.serve import run_bench as serve_bench

    return serve_bench(str(out / "serve"), quick=True)


if __name__ == "__main__":
    if torch.cuda.is_available():  # the skip needs no Ray
        import ray

        ray.init()
    print(json.dumps(run_bench(sys.argv[1] if len(sys.argv) > 1 else "bench/gpu"), indent=2, default=str))
