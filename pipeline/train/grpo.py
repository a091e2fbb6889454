"""`d2d grpo`: RL with verifiable rewards (GRPO) on arithmetic or GSM8K-format problems, on Ray Train.

    d2d grpo --config tiny --run-dir runs/demo          # RUN/sft → RUN/grpo + RUN/grpo/eval.json

Each step a learner samples `group_size` replies to each of `prompts_per_step` problems
from its own policy copy (KV cache), rewards a reply 1 when its parsed answer is
exact (plus an optional format reward), turns rewards into group-normalised
advantages and takes clipped-surrogate steps, optionally with a k3 KL penalty to the
frozen reference model, which lives in its own Ray actor. Learners are Ray Train
workers (DDP across workers, checkpoints and FailureConfig from the shared loop).
Held-out exact-match accuracy of RUN/sft and of the result, greedy, on the same
problems, goes to RUN/grpo/eval.json.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch

from pipeline.train.datasets import GSM8K_TEST, GSM8K_TRAIN
from pipeline.train.losses import group_advantages
from pipeline.train.rl import RLCommon, rl_update


@dataclass(kw_only=True)
class GRPOConfig(RLCommon):
    presets: ClassVar[dict[str, dict]] = {
        # ~0.7 s/step on one quiet CPU core: 600 steps ≈ 7 minutes, the demo's largest stage;
        # the held-out gain still grows at the end (docs/experiments/2026-12-02-training.md).
        "tiny": {"max_steps": 600, "prompts_per_step": 32, "group_size": 8, "max_new_tokens": 12,
                 "minibatch_size": 64, "lr": 1e-4, "eval_n": 100, "checkpoint_every": 100, "kl_coef": 0.0},
        "gsm8k": {"task": "gsm8k", "max_new_tokens": 256, "prompts_per_step": 32, "group_size": 8,
                  "lr": 1e-6, "max_steps": 500, "eval_n": 500, "kl_coef": 0.04},
    }
    out: str = "grpo"
    """Output folder name under the run directory."""
    task: Literal["arithmetic", "gsm8k"] = "arithmetic"
    """Problems: the SFT stage's arithmetic generator, or GSM8K-format JSONL (`#### N` answers)."""
    gsm8k_train: str = GSM8K_TRAIN
    """GSM8K-format JSONL of training problems (task=gsm8k)."""
    gsm8k_test: str = GSM8K_TEST
    """GSM8K-format JSONL of held-out problems (task=gsm8k)."""
    arith_ops: str = ""
    """Arithmetic operations; empty: as in INIT/sft.json (what SFT taught), else `+-*`."""
    arith_lo: int | None = None
    """Smallest operand; none: as in INIT/sft.json, else 0."""
    arith_hi: int | None = None
    """Largest operand; none: as in INIT/sft.json, else 99."""
    group_size: int = 8
    """G: replies sampled per problem; advantages are normalised within each group."""
    scale_advantages: bool = True
    """Divide by the group's std (GRPO); false only centres (Dr. GRPO)."""
    format_reward: float = 0.1
    """Extra reward when the reply states its answer in the fixed format (`The answer is N` / `#### N`)."""
    eval_n: int = 100
    """Held-out problems for accuracy before/after (fewer when the arithmetic range has fewer)."""

    def __post_init__(self):
        super().__post_init__()
        if self.eval_n < 1:
            raise ValueError(f"eval_n: must be >= 1, got {self.eval_n}")
        if self.group_size < 2:
            raise ValueError(f"group_size: needs at least 2 samples per problem, got {self.group_size}")


def load_gsm8k(path: str) -> tuple[list[dict], dict]:
    """GSM8K rows → problems {question, answer:int}; rows without an integer `#### N` are counted."""
    from pipeline.chat.arithmetic import parse_answer
    from pipeline.runfs import local_path

    problems, skipped = [], {}
    for line in open(local_path(path), encoding="utf-8"):
        try:
            row = json.loads(line)
            answer = parse_answer(row["answer"].split("####")[-1] if "####" in row["answer"] else "", strict=False)
        except (json.JSONDecodeError, KeyError, AttributeError):
            answer, row = None, None
        if row is None or answer is None or not isinstance(row.get("question"), str):
            skipped["unparseable"] = skipped.get("unparseable", 0) + 1
            continue
        problems.append({"question": row["question"], "answer": answer})
    return problems, skipped


def verifiable_reward(reply: str, answer: int, format_reward: float) -> tuple[float, bool]:
    """(reward, correct): 1 for the right parsed answer, plus `format_reward` for the fixed format."""
    from pipeline.chat.arithmetic import parse_answer

    correct = parse_answer(reply) == answer
    return float(correct) + (format_reward if parse_answer(reply, strict=True) is not None else 0.0), correct


class ProblemSource:
    """Training problems for (step, rank): deterministic, so a resumed run sees the same ones."""

    def __init__(self, cfg: GRPOConfig, arith: dict):
        self.cfg, self.arith = cfg, arith
        self.pool = load_gsm8k(cfg.gsm8k_train)[0] if cfg.task == "gsm8k" else None

    def __call__(self, step: int, rank: int) -> list[dict]:
        seed = self.cfg.seed * 1_000_003 + step * 1009 + rank
        if self.pool is not None:
            return random.Random(seed).sample(self.pool, self.cfg.prompts_per_step)
        from pipeline.chat.arithmetic import make_problems

        return make_problems(self.cfg.prompts_per_step, seed, self.arith["ops"], self.arith["lo"], self.arith["hi"])


def grpo_step(ctx, step: int) -> dict:
    """One GRPO step on a learner: sample groups, score, advantages, clipped updates."""
    from pipeline.chat.arithmetic import prompt_messages
    from pipeline.train.rollout import decode_responses, encode_prompts

    cfg: GRPOConfig = ctx.cfg
    problems = ctx.source(step, ctx.rank)
    prompts = encode_prompts(ctx.tok, [prompt_messages(p, ctx.system or None) for p in problems])
    ids = [p for p in prompts for _ in range(cfg.group_size)]
    ro = ctx.sample(ids)
    replies = decode_responses(ctx.tok, ro.responses)
    scored = [verifiable_reward(r, problems[i // cfg.group_size]["answer"], cfg.format_reward)
              for i, r in enumerate(replies)]
    rewards = torch.tensor([s[0] for s in scored])
    adv = group_advantages(rewards, cfg.group_size, scale=cfg.scale_advantages)
    advantages = adv[:, None].expand_as(ro.logprobs).contiguous()
    ref_logp = ctx.ref_logprobs(ro) if cfg.kl_coef > 0 else None
    stats = rl_update(ctx, ro, advantages, ref_logp=ref_logp)
    stats.update(reward=rewards.mean().item(), accuracy=sum(s[1] for s in scored) / len(scored),
                 solved_groups=float((rewards.view(-1, cfg.group_size).std(-1) == 0).float().mean()))
    return stats


def heldout(cfg: GRPOConfig, arith: dict) -> list[dict]:
    if cfg.task == "gsm8k":
        return load_gsm8k(cfg.gsm8k_test)[0][: cfg.eval_n]
    from pipeline.train.evaluate import _heldout

    return _heldout(cfg.eval_n, cfg.seed, arith["ops"], arith["lo"], arith["hi"])


def accuracy_task(path: str, problems: list[dict], system: str, max_new_tokens: int, threads: int) -> float:
    """Greedy held-out exact-match accuracy of a model folder (runs as a Ray task)."""
    from transformers import AutoModelForCausalLM

    from pipeline.runfs import local_path
    from pipeline.tokenizer import load_tokenizer
    from pipeline.train.evaluate import arithmetic_accuracy

    torch.set_num_threads(max(1, threads))
    path = local_path(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return arithmetic_accuracy(model, load_tokenizer(path), problems, system, 64, max_new_tokens)[0]


def run(cfg: GRPOConfig) -> dict:
    import ray

    from pipeline.runfs import RunDir
    from pipeline.train.rl import arithmetic_defaults, run_learners

    init = cfg.init_dir()
    arith, system = arithmetic_defaults(cfg, init)
    problems = heldout(cfg, arith)
    acc = ray.remote(num_cpus=cfg.cpus_per_worker, num_gpus=0)(accuracy_task)
    model = RunDir(init)
    earlier = (model.read_json("sft.json") if model.exists("sft.json") else {}).get("chain", [])
    chain = {p: ray.get(acc.remote(p, problems, system, cfg.max_new_tokens, int(cfg.cpus_per_worker)))
             for p in [*earlier, init] if RunDir(p).exists("config.json")}
    before = chain[init]
    out = run_learners(cfg, grpo_step, {"source": ProblemSource(cfg, arith), "system": system},
                 panels=[("reward", "accuracy"), ("entropy", "response_length"), ("clip_frac", "approx_kl")])
    after = ray.get(acc.remote(out, problems, system, cfg.max_new_tokens, int(cfg.cpus_per_worker)))
    chain[out] = after
    ev = {"accuracy_before": before, "accuracy_after": after, "heldout_problems": len(problems),
          "chain_accuracy": [{"model": p, "accuracy": a} for p, a in chain.items()],
          "task": cfg.task, "arithmetic": arith if cfg.task == "arithmetic" else None, "init": init}
    RunDir(cfg.run_dir).write_json(f"{cfg.out}/eval.json", ev)
    return {"artifacts": out, "accuracy_before": before, "accuracy_after": after}
