"""`d2d reward`: a Bradley–Terry reward model on preference pairs, and `d2d reward score`.

    d2d reward --config tiny --run-dir runs/demo
    d2d reward score --model runs/demo/reward --prompt "How do I bake bread?" --response "Mix flour..."

The backbone comes from RUN/sft (or any HF causal-LM folder); a scalar head reads the
last token (`AutoModelForSequenceClassification`, num_labels=1, so HF tools load it).
Pairs are TRL-convention JSONL or Anthropic HH rows (pipeline.chat.prefs), split by
prompt hash into train and held-out; the held-out pairwise accuracy goes to
RUN/reward/eval.json. Training runs on Ray Train through the shared loop; the model
itself (load, score, loss) is the library pipeline.train.rewardmodel.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import ClassVar

from pipeline.runfs import fsspec_exists
from pipeline.train.datasets import HH_PAIRS
from pipeline.train.rewardmodel import (
    encode_reply,
    load_reward_model,
    pair_batch_loss,
    pairwise_accuracy,
    score_pairs,
)
from pipeline.train.rl import LearnerCommon

# ---------------------------------------------------------------- the stage


@dataclass(kw_only=True)
class RewardConfig(LearnerCommon):
    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"max_steps": 120, "batch_size": 16, "max_len": 160, "lr": 1e-3, "checkpoint_every": 40,
                 "eval_n": 241},
    }
    action: str = "train"
    """`train` (default) or `score`: `d2d reward score --model DIR --prompt P --response R`."""
    out: str = "reward"
    """Output folder name under the run directory."""
    pairs: str = HH_PAIRS
    """Preference JSONL (TRL convention or Anthropic HH rows, .gz allowed)."""
    max_pairs: int = 0
    """Use at most this many pairs (0: all)."""
    heldout_fraction: float = 0.1
    """Share of prompts (by hash) held out for the pairwise accuracy."""
    eval_n: int = 500
    """Held-out pairs evaluated (at every checkpoint and at the end)."""
    batch_size: int = 16
    """Pairs per optimizer step per learner."""
    max_len: int = 256
    """Tokens per prompt+reply, keeping the end (the reply)."""
    model: str = ""
    """`score`: the reward model folder; empty: RUN/reward."""
    prompt: str = ""
    """`score`: the user prompt."""
    response: str = ""
    """`score`: the reply to score."""
    input: str = ""
    """`score`: a JSONL of {"prompt"|"messages", "response"} rows to score instead of one pair."""

    def __post_init__(self):
        super().__post_init__()
        if self.action not in ("train", "score"):
            raise ValueError(f"action: {self.action!r} is not train or score")
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction: must be in (0, 1), got {self.heldout_fraction}")
        if self.batch_size < 1 or self.max_len < 8 or self.eval_n < 1:
            raise ValueError("batch_size/max_len/eval_n: batch_size and eval_n must be >= 1, max_len >= 8")


def reward_step(ctx, step: int) -> dict:
    import random

    cfg: RewardConfig = ctx.cfg
    rng = random.Random(cfg.seed * 1_000_003 + step * 1009 + ctx.rank)
    rows = rng.sample(ctx.train, min(cfg.batch_size, len(ctx.train)))
    ctx.model.train()
    batch = {"chosen": [r["chosen"] for r in rows], "rejected": [r["rejected"] for r in rows]}
    loss, stats = pair_batch_loss(ctx.model, batch, ctx.tok.pad_token_id)
    loss.backward()
    stats.update(loss=loss.item(), lr=ctx.sched.get_last_lr()[0], grad_norm=ctx.optimizer_step())
    if ctx.rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps):
        ev = pairwise_accuracy(ctx.policy, ctx.heldout, ctx.tok.pad_token_id)
        stats.update({f"heldout_{k}": v for k, v in ev.items() if k != "pairs"})
    return stats


def _score(cfg: RewardConfig) -> dict:
    from pipeline.errors import StageError
    from pipeline.runfs import RunDir, local_path

    path = cfg.model or RunDir(cfg.run_dir).path("reward")
    if not RunDir(path).exists("config.json"):
        raise StageError(f"{path}/config.json not found: run `d2d reward --run-dir {cfg.run_dir}` first or pass --model")
    model, tok = load_reward_model(path)
    if cfg.input:
        rows = [json.loads(x) for x in open(local_path(cfg.input), encoding="utf-8") if x.strip()]
        prompts = [r.get("messages") or [{"role": "user", "content": r.get("prompt", "")}] for r in rows]
        replies = [r.get("response", "") for r in rows]
    elif cfg.response:
        prompts, replies = [[{"role": "user", "content": cfg.prompt}]], [cfg.response]
    else:
        raise ValueError("response: `d2d reward score` needs --response (and --prompt) or --input FILE")
    scores = score_pairs(model, tok, prompts, replies, cfg.max_len)
    return {"model": path, "scores": [round(s, 4) for s in scores]}


def run(cfg: RewardConfig) -> dict:
    from pipeline.chat.prefs import load_pairs, split_pairs
    from pipeline.errors import StageError
    from pipeline.runfs import RunDir, local_path
    from pipeline.tokenizer import load_tokenizer
    from pipeline.train.rewardmodel import reward_model
    from pipeline.train.rl import run_learners

    if cfg.action == "score":
        return _score(cfg)
    if not RunDir(cfg.init_dir()).exists("config.json"):
        raise StageError(f"{cfg.init_dir()}/config.json not found: run `d2d sft --run-dir {cfg.run_dir}` first or set init")
    if not fsspec_exists(cfg.pairs):
        raise StageError(f"pairs file {cfg.pairs} not found (set --pairs to a preference JSONL)")
    tok = load_tokenizer(cfg.init_dir())
    data = load_pairs(local_path(cfg.pairs), limit=cfg.max_pairs or None)
    train, heldout = split_pairs(data.pairs, cfg.heldout_fraction)
    if not train or not heldout:
        raise StageError(f"{len(data.pairs)} usable pairs give an empty train or held-out split")
    enc = lambda ps: [{"chosen": encode_reply(tok, p.prompt, p.chosen, cfg.max_len),  # noqa: E731
                       "rejected": encode_reply(tok, p.prompt, p.rejected, cfg.max_len)} for p in ps]
    out = run_learners(cfg, reward_step,
                 {"train": enc(train), "heldout": enc(heldout)[: cfg.eval_n]}, model_fn=reward_model, reference=False, chat_model=False,
                 panels=[("loss", "heldout_loss"), ("accuracy", "heldout_accuracy"), ("margin", "heldout_margin")])
    run_dir = RunDir(cfg.run_dir)
    last = run_dir.read_jsonl(f"{cfg.out}/metrics.jsonl")[-1]
    ev = {"heldout_accuracy": last.get("heldout_accuracy"), "heldout_margin": last.get("heldout_margin"),
          "heldout_loss": last.get("heldout_loss"), "heldout_pairs": min(len(heldout), cfg.eval_n),
          "train_pairs": len(train), "source": cfg.pairs, "rejected_rows": data.reasons, "steps": last.get("step")}
    run_dir.write_json(f"{cfg.out}/eval.json", ev)
    return {"artifacts": out, "heldout_accuracy": ev["heldout_accuracy"], "heldout_pairs": ev["heldout_pairs"]}
