"""`d2d dpo`: direct preference optimisation on Ray Train, from human pairs or critic-built (RLAIF) pairs.

    d2d dpo --config tiny --run-dir runs/demo                       # HH pairs → RUN/dpo
    d2d dpo --config tiny --run-dir runs/demo --pairs-from-critic   # pairs chosen by RUN/reward + guards

Loss `-log σ(β·(log πθ(y_w|x)/π_ref(y_w|x) − log πθ(y_l|x)/π_ref(y_l|x)))` on summed reply
log-probs (the reply's tokens and its `<|im_end|>`). The reference log-probs of every
pair are computed once, up front, by the reference-model actor. Metrics on train and
held-out pairs: implicit reward margin and accuracy, chosen/rejected log-probs;
RUN/dpo/eval.json holds `heldout_reward_accuracy`. With `--pairs-from-critic` the
pairs come from `pipeline.train.critic` (two sampled replies per prompt, a critic
that judges each pair by the principles of a constitution file picks one).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

import torch

from pipeline.train.datasets import HH_PAIRS
from pipeline.train.losses import dpo_loss
from pipeline.train.rl import WithReference
from pipeline.train.rollout import join


@dataclass(kw_only=True)
class DPOConfig(WithReference):
    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"max_steps": 40, "batch_size": 8, "max_pairs": 400, "max_prompt_len": 96, "max_reply_len": 48,
                 "lr": 5e-5, "checkpoint_every": 20, "eval_n": 64, "critic_prompts": 32},
    }
    out: str = "dpo"
    """Output folder name under the run directory."""
    pairs: str = HH_PAIRS
    """Preference JSONL (TRL convention or Anthropic HH rows, .gz allowed)."""
    max_pairs: int = 0
    """Use at most this many pairs from `pairs` (0: all)."""
    heldout_fraction: float = 0.1
    """Share of prompts (by hash) held out for the held-out implicit-reward accuracy."""
    eval_n: int = 100
    """Held-out pairs evaluated (at every checkpoint and at the end)."""
    beta: float = 0.1
    """DPO β: strength of the implicit KL constraint to the reference."""
    label_smoothing: float = 0.0
    """Conservative DPO: assumed share of flipped labels."""
    batch_size: int = 8
    """Pairs per optimizer step per learner."""
    max_prompt_len: int = 256
    """Prompt tokens kept (the most recent ones)."""
    max_reply_len: int = 128
    """Reply tokens kept (the first ones)."""
    pairs_from_critic: bool = False
    """Build pairs by sampling two replies per prompt and letting the critic choose (RLAIF)."""
    critic_prompts: int = 64
    """Prompts (taken from `pairs`) for critic-built pairs."""
    reward_model: str = ""
    """Reward model folder for the critic; empty: RUN/reward."""
    constitution: str = ""
    """Constitution YAML for the critic (principles → scorer, weight); empty: the built-in one."""
    judge_model: str = ""
    """Chat model folder that judges pairs by the constitution's `judge` principles; empty: the policy (`init`)."""
    critic_margin: float = 0.05
    """Critic score difference below which a sampled pair is a tie and set aside."""
    critic_temperature: float = 1.0
    """Sampling temperature of the two candidate replies."""
    critic_num_cpus: float = 0.5
    """CPUs of each critic actor: the reward model and the judge (the reference actor samples the candidates)."""

    def __post_init__(self):
        super().__post_init__()
        if not 0 < self.heldout_fraction < 1:
            raise ValueError(f"heldout_fraction: must be in (0, 1), got {self.heldout_fraction}")
        if self.beta <= 0:
            raise ValueError(f"beta: must be > 0, got {self.beta}")
        for name in ("batch_size", "max_prompt_len", "max_reply_len", "critic_prompts", "eval_n"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")


def encode_pair(tok, prompt: list[dict], chosen: str, rejected: str, max_prompt: int, max_reply: int) -> dict:
    """Token ids: prompt (ending in the assistant header) and each reply with its `<|im_end|>`."""
    from pipeline.tokenizer import chat_spans, render_chat

    p = render_chat(tok, prompt, add_generation_prompt=True)

    def reply(text: str) -> list[int]:
        ids, mask = chat_spans(tok, prompt + [{"role": "assistant", "content": text}])
        return [t for t, m in zip(ids[len(p):], mask[len(p):], strict=True) if m][:max_reply]

    return {"prompt": p[-max_prompt:], "chosen": reply(chosen), "rejected": reply(rejected)}


def sequence_logps(logp_fn, rows: list[dict], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed reply log-probs (chosen, rejected) for encoded pairs, in one forward pass."""
    prompts = [r["prompt"] for r in rows] * 2
    replies = [r["chosen"] for r in rows] + [r["rejected"] for r in rows]
    ids, am, P, rmask = join(prompts, replies, pad_id)
    lp = (logp_fn(ids, am, P) * rmask).sum(-1)
    return lp[: len(rows)], lp[len(rows) :]


def pair_metrics(pc, pr, rc, rr, beta: float, smoothing: float) -> tuple[torch.Tensor, dict]:
    loss, cr, rj = dpo_loss(pc, pr, rc, rr, beta, smoothing)
    return loss, {"loss": loss.item(), "reward_accuracy": (cr > rj).float().mean().item(),
                  "reward_margin": (cr - rj).mean().item(), "chosen_logp": pc.mean().item(),
                  "rejected_logp": pr.mean().item(), "chosen_reward": cr.mean().item(),
                  "rejected_reward": rj.mean().item()}


def dpo_step(ctx, step: int) -> dict:
    cfg: DPOConfig = ctx.cfg
    rng = random.Random(cfg.seed * 1_000_003 + step * 1009 + ctx.rank)
    rows = rng.sample(ctx.train, min(cfg.batch_size, len(ctx.train)))
    ctx.model.train()
    logp_fn = lambda i, a, p: ctx.model(i.to(ctx.device), a.to(ctx.device), p, 1.0)[0].cpu()  # noqa: E731
    pc, pr = sequence_logps(logp_fn, rows, ctx.tok.pad_token_id)
    rc = torch.tensor([r["ref_chosen"] for r in rows])
    rr = torch.tensor([r["ref_rejected"] for r in rows])
    loss, stats = pair_metrics(pc, pr, rc, rr, cfg.beta, cfg.label_smoothing)
    loss.backward()
    stats["grad_norm"] = ctx.optimizer_step()
    stats["lr"] = ctx.sched.get_last_lr()[0]
    if ctx.rank == 0 and ((step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps):
        stats.update({f"heldout_{k}": v for k, v in evaluate_pairs(ctx.policy, ctx.heldout, cfg, ctx.tok.pad_token_id).items()})
    return stats


@torch.no_grad()
def evaluate_pairs(policy, rows: list[dict], cfg: DPOConfig, pad_id: int) -> dict:
    """Implicit-reward metrics of `policy` (a PolicyValue) on encoded pairs with reference log-probs."""
    was = policy.training
    policy.eval()
    device = next(policy.parameters()).device
    logp_fn = lambda i, a, p: policy(i.to(device), a.to(device), p, 1.0)[0].cpu()  # noqa: E731
    pcs, prs = [], []
    for i in range(0, len(rows), 16):
        pc, pr = sequence_logps(logp_fn, rows[i : i + 16], pad_id)
        pcs.append(pc)
        prs.append(pr)
    policy.train(was)
    rc = torch.tensor([r["ref_chosen"] for r in rows])
    rr = torch.tensor([r["ref_rejected"] for r in rows])
    return pair_metrics(torch.cat(pcs), torch.cat(prs), rc, rr, cfg.beta, cfg.label_smoothing)[1]


def with_reference(ref, rows: list[dict], pad_id: int, batch_size: int = 16) -> list[dict]:
    """Attach the reference model's summed reply log-probs to each encoded pair (one actor pass)."""
    import ray

    futures = []
    for i in range(0, len(rows), batch_size):
        chunk = rows[i : i + batch_size]
        prompts = [r["prompt"] for r in chunk] * 2
        replies = [r["chosen"] for r in chunk] + [r["rejected"] for r in chunk]
        ids, am, P, rmask = join(prompts, replies, pad_id)
        futures.append((chunk, rmask, ref.logprobs.remote(ids, am, P)))
    for chunk, rmask, fut in futures:
        lp = (ray.get(fut) * rmask).sum(-1)
        for j, r in enumerate(chunk):
            r["ref_chosen"], r["ref_rejected"] = lp[j].item(), lp[len(chunk) + j].item()
    return rows


def load_encoded(cfg: DPOConfig, tok, ref) -> tuple[list[dict], list[dict], dict]:
    """(train rows, held-out rows, data report) from the pairs file or the critic."""
    from pipeline.chat.prefs import load_pairs, split_pairs
    from pipeline.errors import StageError
    from pipeline.runfs import fsspec_exists, local_path

    if not fsspec_exists(cfg.pairs):
        raise StageError(f"pairs file {cfg.pairs} not found (set --pairs to a preference JSONL)")
    data = load_pairs(local_path(cfg.pairs), limit=cfg.max_pairs or None)
    report = {"source": cfg.pairs, "pairs": len(data.pairs), "rejected": data.reasons}
    pairs = data.pairs
    if cfg.pairs_from_critic:
        from pipeline.train.critic import critic_pairs

        pairs, report["critic"] = critic_pairs(cfg, [p.prompt for p in pairs[: cfg.critic_prompts]], ref)
    train, heldout = split_pairs(pairs, cfg.heldout_fraction)
    if not train or not heldout:
        raise StageError(f"{len(pairs)} usable pairs give an empty train or held-out split; use more pairs")
    enc = lambda ps: [encode_pair(tok, p.prompt, p.chosen, p.rejected, cfg.max_prompt_len, cfg.max_reply_len) for p in ps]  # noqa: E731
    report.update(train=len(train), heldout=len(heldout))
    return enc(train), enc(heldout)[: cfg.eval_n], report


def run(cfg: DPOConfig) -> dict:
    import ray

    from pipeline.runfs import RunDir
    from pipeline.tokenizer import load_tokenizer
    from pipeline.train.rl import Reference, arithmetic_defaults, run_learners
    from pipeline.train.rollout import spawn

    arithmetic_defaults(cfg, cfg.init_dir())  # fails early, naming the missing model folder
    tok = load_tokenizer(cfg.init_dir())
    ref = spawn(Reference, cfg.init_dir(), num_cpus=cfg.ref_num_cpus, num_gpus=cfg.ref_num_gpus)
    train, heldout, report = load_encoded(cfg, tok, ref)
    train = with_reference(ref, train, tok.pad_token_id)
    heldout = with_reference(ref, heldout, tok.pad_token_id)
    ray.kill(ref)
    # Reference log-probs were computed above, once; the learners need no reference actor.
    out = run_learners(cfg, dpo_step, {"train": train, "heldout": heldout}, reference=False,
                 panels=[("loss", "heldout_loss"), ("reward_accuracy", "heldout_reward_accuracy"),
                         ("reward_margin", "heldout_reward_margin"), ("chosen_logp", "rejected_logp")])
    row = RunDir(cfg.run_dir).read_jsonl(f"{cfg.out}/metrics.jsonl")[-1]
    ev = {"heldout_reward_accuracy": row.get("heldout_reward_accuracy"),
          "heldout_reward_margin": row.get("heldout_reward_margin"), "heldout_pairs": len(heldout),
          "train_reward_accuracy": row.get("reward_accuracy"), "data": report, "beta": cfg.beta}
    RunDir(cfg.run_dir).write_json(f"{cfg.out}/eval.json", ev)
    return {"artifacts": out, "heldout_reward_accuracy": ev["heldout_reward_accuracy"], "pairs": report}
