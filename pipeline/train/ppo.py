"""`d2d ppo`: RLHF with PPO on Ray Train: policy + value head learners, reference and reward actors.

    d2d ppo --config tiny --run-dir runs/demo        # RUN/sft + RUN/reward → RUN/ppo

Layout as in OpenRLHF: the frozen reference model and the frozen reward model are
each a Ray actor with its own CPUs/GPUs from config, the learners (policy with a value
head on its last hidden state) are Ray Train workers that sample their own rollouts
with the KV cache. Per step: sample replies to `prompts_per_step` prompts, score them
with the reward model (normalised by running mean/std; replies that never stop get
`missing_eos_penalty`), reward = score on the last token − β·KL(policy ‖ reference) on
every token (β fixed or adaptive towards `kl_target`), GAE, whitened advantages, then
`epochs_per_step` epochs of clipped-surrogate + clipped value-loss minibatches.
Metrics per step: reward, KL, β, entropy, response length, clip fraction, value loss.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import ClassVar

import torch

from pipeline.train.datasets import HH_PAIRS
from pipeline.train.losses import gae, kl_controller, masked_whiten, per_token_rewards
from pipeline.train.rl import RLCommon, policy_value_model, rl_update


@dataclass(kw_only=True)
class PPOConfig(RLCommon):
    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"max_steps": 40, "prompts_per_step": 16, "max_new_tokens": 24, "minibatch_size": 8,
                 "epochs_per_step": 2, "lr": 3e-5, "kl_coef": 0.1, "kl_target": 2.0, "kl_horizon": 100,
                 "checkpoint_every": 20, "max_prompts": 400, "max_prompt_len": 64},
    }
    out: str = "ppo"
    """Output folder name under the run directory."""
    reward_model: str = ""
    """Reward model folder; empty: RUN/reward."""
    reward_num_cpus: float = 0.5
    """CPUs of the reward-model actor."""
    reward_num_gpus: float = 0.0
    """GPUs of the reward-model actor."""
    prompts: str = HH_PAIRS
    """Where prompts come from: a preference JSONL (its prompts' first user turn) or a JSONL of {"messages"}."""
    max_prompts: int = 0
    """Use at most this many prompts (0: all)."""
    max_prompt_len: int = 128
    """Prompts longer than this many tokens are set aside (counted)."""
    kl_target: float | None = 6.0
    """Adaptive KL controller's target KL per reply (nats); none: fixed β = kl_coef."""
    kl_horizon: int = 10_000
    """Adaptive KL controller's horizon (Ziegler et al.)."""
    gamma: float = 1.0
    """GAE discount."""
    lam: float = 0.95
    """GAE λ."""
    vf_coef: float = 0.1
    """Weight of the value loss."""
    value_clip: float = 0.2
    """Value-loss clip range around the rollout's values."""
    missing_eos_penalty: float = 1.0
    """Subtracted from the (normalised) score of a reply that hits max_new_tokens without stopping."""
    normalize_reward: bool = True
    """Normalise reward-model scores by a running mean and std."""

    def __post_init__(self):
        super().__post_init__()
        if self.kl_target is not None and self.kl_target <= 0:
            raise ValueError(f"kl_target: must be > 0 or none, got {self.kl_target}")
        if self.kl_horizon < 1 or not 0 <= self.gamma <= 1 or not 0 <= self.lam <= 1:
            raise ValueError("kl_horizon/gamma/lam: kl_horizon >= 1, gamma and lam in [0, 1]")
        if self.max_prompt_len < 4:
            raise ValueError(f"max_prompt_len: must be >= 4, got {self.max_prompt_len}")


def load_prompts(cfg: PPOConfig, tok) -> tuple[list[list[dict]], dict]:
    """Prompt conversations (first user turn of each pair, or given messages) that fit max_prompt_len."""
    import json

    from pipeline.chat.prefs import load_pairs
    from pipeline.errors import StageError
    from pipeline.runfs import fsspec_exists, local_path
    from pipeline.tokenizer import render_chat

    if not fsspec_exists(cfg.prompts):
        raise StageError(f"prompts file {cfg.prompts} not found")
    path = local_path(cfg.prompts)
    first = json.loads(next(_lines(path)))
    if "chosen" in first:
        convs = [[next(m for m in p.prompt if m["role"] == "user")] for p in load_pairs(path).pairs]
    else:
        convs = [[m for m in json.loads(x)["messages"] if m["role"] != "assistant"][:1] for x in _lines(path)]
    seen, kept, too_long = set(), [], 0
    for c in convs:
        key = c[0]["content"]
        if key in seen:
            continue
        seen.add(key)
        if len(render_chat(tok, c, add_generation_prompt=True)) > cfg.max_prompt_len:
            too_long += 1
            continue
        kept.append(c)
    kept = kept[: cfg.max_prompts or None]
    if not kept:
        raise StageError(f"no prompt in {cfg.prompts} fits max_prompt_len={cfg.max_prompt_len}")
    return kept, {"prompts": len(kept), "set_aside": {"too_long": too_long}}


def _lines(path: str):
    import gzip

    with (gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")) as f:
        yield from (x for x in f if x.strip())


class RunningMoments:
    """Running mean and variance of reward-model scores (Welford / Chan merge)."""

    def __init__(self, state: dict):
        self.s = state.setdefault("moments", {"mean": 0.0, "var": 1.0, "count": 0})

    def update(self, xs: torch.Tensor) -> None:
        n, m, v = xs.numel(), xs.mean().item(), xs.var(unbiased=False).item()
        c = self.s["count"]
        tot = c + n
        delta = m - self.s["mean"]
        self.s["var"] = (self.s["var"] * c + v * n + delta**2 * c * n / tot) / tot
        self.s["mean"] += delta * n / tot
        self.s["count"] = tot

    def normalise(self, xs: torch.Tensor) -> torch.Tensor:
        return (xs - self.s["mean"]) / math.sqrt(self.s["var"] + 1e-8)


def ppo_step(ctx, step: int) -> dict:
    import ray

    from pipeline.tokenizer import stop_token_ids
    from pipeline.train.rollout import decode_responses, encode_prompts

    cfg: PPOConfig = ctx.cfg
    rng = random.Random(cfg.seed * 1_000_003 + step * 1009 + ctx.rank)
    convs = rng.sample(ctx.prompts, min(cfg.prompts_per_step, len(ctx.prompts)))
    ro = ctx.sample(encode_prompts(ctx.tok, convs))
    replies = decode_responses(ctx.tok, ro.responses)
    scores = torch.tensor(ray.get(ctx.reward.score.remote(convs, replies)), dtype=torch.float32)
    ref_logp = ctx.ref_logprobs(ro)
    mask = ro.response_mask.float()
    stopped = torch.tensor([bool(r) and r[-1] in stop_token_ids(ctx.tok) for r in ro.responses])
    moments = RunningMoments(ctx.state)
    if cfg.normalize_reward:
        moments.update(scores)
    score = moments.normalise(scores) if cfg.normalize_reward else scores.clone()
    score = score - cfg.missing_eos_penalty * (~stopped).float()
    beta = ctx.state.setdefault("beta", cfg.kl_coef)
    rewards, kl = per_token_rewards(score, ro.logprobs, ref_logp, mask, beta, cfg.kl_estimator)
    with torch.no_grad():
        ctx.policy.eval()
        values = ctx.policy(ro.input_ids.to(ctx.device), ro.attention_mask.to(ctx.device), ro.prompt_len,
                            cfg.temperature)[2].cpu() * mask
    adv, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)
    adv = masked_whiten(adv, mask)
    stats = rl_update(ctx, ro, adv, returns=returns, old_values=values, vf_coef=cfg.vf_coef,
                      value_clip=cfg.value_clip)
    seq_kl = kl.sum(-1).mean().item()
    controller = kl_controller(beta, cfg.kl_target, cfg.kl_horizon)
    ctx.state["beta"] = controller.update(seq_kl, len(convs) * ctx.world)
    stats.update(reward=scores.mean().item(), reward_normalised=score.mean().item(), kl=seq_kl, beta=beta,
                 stop_rate=stopped.float().mean().item())
    return stats


def run(cfg: PPOConfig) -> dict:
    from pipeline.errors import StageError
    from pipeline.runfs import RunDir
    from pipeline.tokenizer import load_tokenizer
    from pipeline.train.rewardmodel import RewardScorer
    from pipeline.train.rl import arithmetic_defaults, run_learners
    from pipeline.train.rollout import spawn

    rm = cfg.reward_model or RunDir(cfg.run_dir).path("reward")
    if not RunDir(rm).exists("config.json"):
        raise StageError(f"{rm}/config.json not found: run `d2d reward --run-dir {cfg.run_dir}` first or set reward_model")
    _, system = arithmetic_defaults(cfg, cfg.init_dir())
    prompts, report = load_prompts(cfg, load_tokenizer(cfg.init_dir()))
    if system:
        prompts = [[{"role": "system", "content": system}, *p] for p in prompts]
    reward = spawn(RewardScorer, rm, num_cpus=cfg.reward_num_cpus, num_gpus=cfg.reward_num_gpus)
    out = run_learners(cfg, ppo_step, {"prompts": prompts}, model_fn=policy_value_model,
                 actors={"reward": reward}, reference=True,
                 panels=[("reward", "kl"), ("beta",), ("entropy", "response_length"), ("clip_frac", "value_loss")])
    rows = RunDir(cfg.run_dir).read_jsonl(f"{cfg.out}/metrics.jsonl")
    k = max(1, len(rows) // 5)
    first, last = rows[:k], rows[-k:]
    mean = lambda rs, key: sum(r[key] for r in rs) / len(rs)  # noqa: E731
    ev = {"reward_first": mean(first, "reward"), "reward_last": mean(last, "reward"),
          "kl_last": mean(last, "kl"), "kl_target": cfg.kl_target, "beta_last": rows[-1]["beta"],
          "stop_rate_last": mean(last, "stop_rate"), "window_steps": k, "steps": rows[-1]["step"], "data": report}
    RunDir(cfg.run_dir).write_json(f"{cfg.out}/eval.json", ev)
    return {"artifacts": out, **{key: ev[key] for key in ("reward_first", "reward_last", "kl_last", "kl_target")}}
