"""Alignment losses and estimators, pure torch: Bradley–Terry, DPO, PPO, GAE, GRPO, KL.

    from pipeline.train.losses import dpo_loss, ppo_policy_loss, gae, group_advantages
    .venv/bin/pytest tests/test_losses.py -q      # every function against hand-computed values

Shapes: per-token tensors are [batch, T] with a float `mask` (1 on response tokens,
0 on prompt and padding); per-sequence tensors are [batch]. Nothing here imports Ray
or a model, so the maths is testable on its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

KLEstimator = Literal["k1", "k2", "k3"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise `x` to unit variance over masked entries (population variance)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(labels[t] | ...) for logits already aligned with labels ([B, T, V], [B, T])."""
    logp = F.log_softmax(logits.float() / temperature, dim=-1)
    return logp.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Per-position entropy of the softmax distribution, [B, T]."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


# ---------------------------------------------------------------- reward model / DPO


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`-log σ(r_chosen − r_rejected)` averaged; also the pairwise accuracy (ties count 0)."""
    margin = r_chosen - r_rejected
    return -F.logsigmoid(margin).mean(), (margin > 0).float().mean()


def dpo_loss(
    policy_chosen: torch.Tensor,
    policy_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO (Rafailov et al. 2023) on summed sequence log-probs.

    Returns (loss, chosen_rewards, rejected_rewards), the rewards being the implicit
    `β·(log πθ − log π_ref)` per pair. `label_smoothing` > 0 is conservative DPO.
    """
    chosen_rewards = beta * (policy_chosen - ref_chosen)
    rejected_rewards = beta * (policy_rejected - ref_rejected)
    logits = chosen_rewards - rejected_rewards
    losses = -(1 - label_smoothing) * F.logsigmoid(logits) - label_smoothing * F.logsigmoid(-logits)
    return losses.mean(), chosen_rewards.detach(), rejected_rewards.detach()


# ---------------------------------------------------------------- KL estimators


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: KLEstimator = "k1") -> torch.Tensor:
    """Per-token estimate of KL(π ‖ π_ref) for tokens sampled from π (Schulman, "Approximating KL").

    With log r = log π_ref − log π: k1 = −log r (unbiased, can be negative),
    k2 = (log r)²/2 (biased, low variance), k3 = (r − 1) − log r (unbiased, ≥ 0).
    """
    log_ratio = ref_logp - logp
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio**2
    if kind == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"kl_estimator: {kind!r} is not one of 'k1', 'k2', 'k3'")


@dataclass
class FixedKLController:
    value: float

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.value


@dataclass
class AdaptiveKLController:
    """Ziegler et al. 2019: β ← β·(1 + clip(KL/target − 1, ±0.2)·n/horizon)."""

    value: float
    target: float
    horizon: int

    def update(self, current_kl: float, n_steps: int) -> float:
        error = max(-0.2, min(0.2, current_kl / self.target - 1.0))
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value


def kl_controller(init: float, target: float | None, horizon: int) -> FixedKLController | AdaptiveKLController:
    """Adaptive when a target KL is given, else fixed β."""
    return AdaptiveKLController(init, target, horizon) if target else FixedKLController(init)


# ---------------------------------------------------------------- PPO


def per_token_rewards(
    score: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
    beta: float, kind: KLEstimator = "k1",
) -> tuple[torch.Tensor, torch.Tensor]:
    """RLHF reward: −β·KL at every response token plus the sequence score on its last token.

    Returns (rewards [B, T], kl [B, T]).
    """
    kl = kl_estimate(logp, ref_logp, kind) * mask
    rewards = -beta * kl
    last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)
    rewards = rewards + last.float() * score.unsqueeze(-1)
    return rewards, kl


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over response tokens; returns (advantages, returns).

    The value after the last response token is 0 (the episode ends there); masked
    positions contribute nothing, so the mask may start anywhere and must end the row's tokens.
    """
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[-1]
    adv = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = delta + gamma * lam * last
        last = last * mask[:, t]
        adv[:, t] = last
    return adv, (adv + values) * mask


def ppo_policy_loss(
    logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float = 0.2
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped surrogate `−min(ρA, clip(ρ, 1±ε)A)`, averaged over response tokens."""
    ratio = torch.exp(logp - old_logp)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean(0.5 * (logp - old_logp) ** 2, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip: float | None = 0.2
) -> torch.Tensor:
    """`½·max((V − R)², (V_clip − R)²)` with V_clip within ±clip of the rollout's values."""
    err = (values - returns) ** 2
    if clip is not None:
        v_clip = old_values + torch.clamp(values - old_values, -clip, clip)
        err = torch.maximum(err, (v_clip - returns) ** 2)
    return 0.5 * masked_mean(err, mask)


# ---------------------------------------------------------------- GRPO


def group_advantages(rewards: torch.Tensor, group_size: int, scale: bool = True, eps: float = 1e-4) -> torch.Tensor:
    """GRPO advantages: each reward minus its group's mean, divided by the group's std.

    `rewards` is [n_prompts * group_size] with each prompt's samples contiguous. The std
    is the sample (unbiased) one, as in DeepSeekMath and TRL; `scale=False` only centres
    (Dr. GRPO). A group whose rewards are all equal gets zero advantages.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"group_size: {rewards.numel()} rewards do not split into groups of {group_size}")
    g = rewards.view(-1, group_size).float()
    centred = g - g.mean(-1, keepdim=True)
    if scale and group_size > 1:
        std = g.std(-1, keepdim=True)
        centred = torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))
    return centred.view(-1)
