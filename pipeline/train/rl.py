"""Learner stages on the training loop (reward, DPO, PPO, GRPO): config fields, learner setup, clipped update.

    d2d grpo --config tiny --run-dir runs/demo      # or d2d ppo, dpo, reward: all run `run_learners`

A learner is a worker of the one training loop (`pipeline.train.loop.fit`) holding the
policy (plus a value head for PPO, or a reward model). Each step (the stage's `step_fn`)
samples rollouts from its own copy with the KV cache, asks the frozen reference (and
reward) actors for what it needs, and takes clipped-surrogate minibatch steps; DDP keeps
the workers' copies equal, so no weight broadcast to a separate sampler is needed.
Checkpoints, resume, metrics rows, fault injection and the step budget are the loop's.
Rank 0 saves the policy as an HF folder; the driver adds PNG plots of the metrics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from pipeline.train.loop import TrainConfig, optimizer_step
from pipeline.train.losses import (
    entropy_from_logits,
    kl_estimate,
    masked_mean,
    ppo_policy_loss,
    value_loss,
)
from pipeline.train.rollout import ReferenceModel, Rollout, sample


@dataclass(kw_only=True)
class LearnerCommon(TrainConfig):
    """The training loop's fields with learner defaults, plus where the policy comes from (reward, DPO, PPO, GRPO)."""

    run_dir: str = "runs/default"
    """Run directory (local path or fsspec URI such as s3://bucket/runs/x); the policy comes from RUN/sft unless `init` is set."""
    init: str = ""
    """Policy (and reference) model folder, path or URI; empty: RUN/sft."""
    max_steps: int = 200
    """Optimizer steps (RL: one rollout batch each)."""
    lr: float = 1e-5
    """AdamW learning rate (constant after a short warmup)."""
    schedule: Literal["cosine", "constant"] = "constant"
    """After warmup: constant (learners' default) or cosine decay to lr * min_lr_ratio."""
    warmup_steps: int = 5
    """Linear warmup (scheduler steps: RL takes one per minibatch)."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    num_workers: int = 1
    """Ray Train learner workers (DDP)."""
    checkpoint_every: int = 20
    """Steps between checkpoints (one more is always written at the end)."""

    def init_dir(self) -> str:
        from pipeline.runfs import RunDir

        return self.init or RunDir(self.run_dir).path("sft")

    def out_dir(self) -> str:
        from pipeline.runfs import RunDir

        return RunDir(self.run_dir).path(self.out)


@dataclass(kw_only=True)
class WithReference(LearnerCommon):
    """Stages with a frozen reference-model actor (PPO, GRPO with kl_coef > 0, DPO)."""

    ref_num_cpus: float = 0.5
    """CPUs of the reference-model actor."""
    ref_num_gpus: float = 0.0
    """GPUs of the reference-model actor."""

    def __post_init__(self):
        super().__post_init__()
        if self.ref_num_cpus <= 0 or self.ref_num_gpus < 0:
            raise ValueError("ref_num_cpus/ref_num_gpus: ref_num_cpus must be > 0 and ref_num_gpus >= 0")


@dataclass(kw_only=True)
class RLCommon(WithReference):
    """Online RL fields: sampling, the clipped update, the KL penalty (PPO, GRPO)."""

    system_prompt: str | None = None
    """System prompt for sampled conversations; none: the SFT model's default (INIT/sft.json)."""
    prompts_per_step: int = 16
    """Prompts each learner samples per step."""
    max_new_tokens: int = 32
    """Reply budget in tokens; a reply that has not stopped by then is cut."""
    temperature: float = 1.0
    """Sampling temperature of rollouts (log-probs are taken at the same temperature)."""
    epochs_per_step: int = 1
    """Passes over each rollout batch (PPO epochs; GRPO's μ)."""
    minibatch_size: int = 64
    """Sequences per optimizer step within a rollout batch."""
    clip_eps: float = 0.2
    """PPO/GRPO ratio clip ε."""
    kl_coef: float = 0.04
    """β of the KL penalty to the reference model (0: no reference actor is started)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """Per-token KL estimator (Schulman): k1 log-ratio, k2 squared/2, k3 unbiased non-negative."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("prompts_per_step", "max_new_tokens", "epochs_per_step", "minibatch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature: RL samples, so it must be > 0, got {self.temperature}")
        if not 0 < self.clip_eps < 1:
            raise ValueError(f"clip_eps: must be in (0, 1), got {self.clip_eps}")
        if self.kl_coef < 0:
            raise ValueError(f"kl_coef: must be >= 0, got {self.kl_coef}")


def arithmetic_defaults(cfg, init: str) -> tuple[dict, str]:
    """(arithmetic ops/lo/hi, system prompt): config first, else what INIT/sft.json says SFT used."""
    from pipeline.errors import StageError
    from pipeline.runfs import RunDir

    model = RunDir(init)
    if not model.exists("config.json"):
        raise StageError(f"{init}/config.json not found: run `d2d sft --run-dir {cfg.run_dir}` first or set init")
    d = model.read_json("sft.json") if model.exists("sft.json") else {}
    a = d.get("arithmetic", {})
    arith = {"ops": getattr(cfg, "arith_ops", "") or a.get("ops", "+-*"),
             "lo": a.get("lo", 0) if getattr(cfg, "arith_lo", None) is None else cfg.arith_lo,
             "hi": a.get("hi", 99) if getattr(cfg, "arith_hi", None) is None else cfg.arith_hi}
    system = getattr(cfg, "system_prompt", None)
    system = system if system is not None else d.get("system_prompt", "")
    return arith, system or ""


class PolicyValue(torch.nn.Module):
    """The policy LM, plus a scalar value head on its last hidden state when `with_value`."""

    def __init__(self, lm, with_value: bool):
        super().__init__()
        self.lm = lm
        self.v_head = torch.nn.Linear(lm.config.hidden_size, 1) if with_value else None
        if self.v_head is not None:
            torch.nn.init.zeros_(self.v_head.weight)
            torch.nn.init.zeros_(self.v_head.bias)

    def forward(self, input_ids, attention_mask, prompt_len: int, temperature: float):
        """Response log-probs, entropies and values (or None), each [B, T]."""
        from pipeline.train.losses import token_logprobs

        pos = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        # Only the response columns need the LM head (the prompt's logits would be thrown away).
        keep = input_ids.shape[1] - prompt_len + 1
        out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                      output_hidden_states=self.v_head is not None, logits_to_keep=keep)
        logits = out.logits[:, :-1].float() / temperature
        logp = token_logprobs(logits, input_ids[:, prompt_len:])
        values = None
        if self.v_head is not None:
            values = self.v_head(out.hidden_states[-1][:, prompt_len - 1 : -1].float()).squeeze(-1)
        return logp, entropy_from_logits(logits.detach()), values


def rl_update(ctx, ro: Rollout, advantages: torch.Tensor, *, ref_logp: torch.Tensor | None = None,
              returns: torch.Tensor | None = None, old_values: torch.Tensor | None = None,
              vf_coef: float = 0.1, value_clip: float | None = 0.2) -> dict:
    """Clipped-surrogate minibatch epochs over one rollout batch (plus value loss, plus in-loss KL)."""
    cfg, dev = ctx.cfg, ctx.device
    # Everything the loss touches lives on the learner's device; rollouts arrive on the CPU.
    mask = ro.response_mask.to(dev).float()
    old_logp, advantages = ro.logprobs.to(dev), advantages.to(dev)
    ref_logp = ref_logp.to(dev) if ref_logp is not None else None
    returns = returns.to(dev) if returns is not None else None
    old_values = old_values.to(dev) if old_values is not None else None
    n = len(ro.input_ids)
    gen = torch.Generator().manual_seed(cfg.seed + ctx.step)
    sums: dict[str, float] = {}
    count = 0
    ctx.model.train()
    for _ in range(cfg.epochs_per_step):
        for idx in torch.randperm(n, generator=gen).split(cfg.minibatch_size):
            # Skip the all-pad response tail (responses are right-padded from column prompt_len).
            cols = max(1, int(ro.response_mask[idx].sum(-1).max()))
            m = mask[idx]
            ids = ro.input_ids[idx][:, : ro.prompt_len + cols]
            am = ro.attention_mask[idx][:, : ro.prompt_len + cols]
            m = m[:, :cols]
            logp, ent, values = ctx.model(ids.to(dev), am.to(dev), ro.prompt_len, cfg.temperature)
            loss, st = ppo_policy_loss(logp, old_logp[idx][:, :cols], advantages[idx][:, :cols], m, cfg.clip_eps)
            stats = {"policy_loss": loss.item(), "clip_frac": st["clip_frac"].item(),
                     "approx_kl": st["approx_kl"].item(), "entropy": masked_mean(ent, m).item()}
            if ref_logp is not None and cfg.kl_coef > 0:
                kl = masked_mean(kl_estimate(logp, ref_logp[idx][:, :cols], cfg.kl_estimator), m)
                loss = loss + cfg.kl_coef * kl
                stats["kl_loss"] = kl.item()
            if values is not None:
                vl = value_loss(values, old_values[idx][:, :cols], returns[idx][:, :cols], m, value_clip)
                loss = loss + vf_coef * vl
                stats["value_loss"] = vl.item()
            loss.backward()
            stats["grad_norm"] = optimizer_step(ctx.model, ctx.opt, ctx.sched, cfg.grad_clip)
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + v
            count += 1
    out = {k: v / max(count, 1) for k, v in sums.items()}
    out["response_length"] = ro.response_mask.sum(-1).float().mean().item()
    out["lr"] = ctx.sched.get_last_lr()[0]
    return out


class Reference(ReferenceModel):
    """The frozen reference actor on a local copy of its folder (path or URI), on the GPU Ray gave it."""

    def __init__(self, path: str, threads: int = 1):
        from pipeline.runfs import local_path

        super().__init__(local_path(path), threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device)

    @torch.no_grad()
    def logprobs(self, input_ids, attention_mask, prompt_len: int, temperature: float = 1.0, batch_size: int = 16):
        out = super().logprobs(input_ids.to(self.device), attention_mask.to(self.device), prompt_len,
                               temperature, batch_size)
        return out.cpu()


# ---------------------------------------------------------------- the learner (a worker of the training loop)


def learner_model(build, init: str):
    """The loop's `model_fn`: `build(local INIT, tokenizer)` (`policy_model`, `policy_value_model`, ...)."""
    from pipeline.runfs import local_path
    from pipeline.tokenizer import load_tokenizer

    local = local_path(init)
    return build(local, load_tokenizer(local))


def learner_setup(ctx) -> None:
    """The loop's `setup`: tokenizer, policy, sampler and reference log-probs on each learner."""
    import ray

    from pipeline.runfs import local_path
    from pipeline.tokenizer import load_tokenizer, stop_token_ids

    cfg = ctx.cfg
    ctx.tok = tok = load_tokenizer(local_path(cfg.init_dir()))
    ctx.policy = ctx.module

    def sample_fn(prompt_ids: list[list[int]]) -> Rollout:
        return sample(ctx.policy.lm, prompt_ids, max_new_tokens=cfg.max_new_tokens, eos_ids=stop_token_ids(tok),
                      pad_id=tok.pad_token_id, temperature=cfg.temperature, generator=ctx.gen)

    def ref_logprobs(ro: Rollout) -> torch.Tensor:
        return ray.get(ctx.ref.logprobs.remote(ro.input_ids, ro.attention_mask, ro.prompt_len, cfg.temperature))

    ctx.sample, ctx.ref_logprobs = sample_fn, ref_logprobs


def save_learner(model, *, init: str, out: str) -> None:
    """The loop's `finalize` (rank 0): the policy's LM (or the reward model) with INIT's tokenizer."""
    from pipeline.runfs import local_path
    from pipeline.tokenizer import load_tokenizer

    save_policy(getattr(model, "lm", model), load_tokenizer(local_path(init)), out)


def save_policy(lm, tok, out: str) -> None:
    from pipeline.train.model import save_chat_model

    save_chat_model(out, lm, tok)


def plot_metrics(cfg, panels: list[tuple[str, ...]]) -> list[str]:
    """PNG curves of RUN/out/metrics.jsonl, one per panel of metric names; returns the files written."""
    from pipeline.runfs import RunDir
    from pipeline.train.plots import plot_metrics as plot_rows

    rows = RunDir(cfg.run_dir).read_jsonl(f"{cfg.out}/metrics.jsonl")
    return plot_rows(rows, cfg.out_dir(), [("_".join(keys), keys) for keys in panels])


def policy_model(init: str, tok) -> PolicyValue:
    """The default `model_fn`: INIT's LM as the policy (GRPO, DPO)."""
    from transformers import AutoModelForCausalLM

    return PolicyValue(AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32), with_value=False)


def policy_value_model(init: str, tok) -> PolicyValue:
    """PPO's `model_fn`: INIT's LM plus a zero-initialised value head."""
    from transformers import AutoModelForCausalLM

    return PolicyValue(AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32), with_value=True)


def run_learners(cfg, step_fn, extras: dict, *, model_fn=policy_model, actors: dict | None = None,
                 reference: bool | None = None, panels: list[tuple[str, ...]] = (), chat_model: bool = True) -> str:
    """Start the reference actor (default: when kl_coef > 0), train on the loop, stop the actors; returns RUN/out.

    `step_fn(ctx, step) -> stats` is one training step (a top-level function, so it pickles);
    `model_fn(init_dir, tokenizer) -> nn.Module` builds what each learner trains from a local
    copy of INIT (`policy_model`, `policy_value_model`, `rewardmodel.reward_model`). A chat
    model (`chat_model`) carries INIT's chat defaults and becomes RUN/.d2d/serve_model.
    """
    from functools import partial

    import ray

    from pipeline.runfs import RunDir
    from pipeline.train.loop import fit
    from pipeline.train.rollout import spawn

    actors = dict(actors or {})
    if reference if reference is not None else getattr(cfg, "kl_coef", 0) > 0:
        actors["ref"] = spawn(Reference, cfg.init_dir(), num_cpus=cfg.ref_num_cpus, num_gpus=cfg.ref_num_gpus)
    out = cfg.out_dir()
    try:
        fit(cfg, model_fn=partial(learner_model, model_fn, cfg.init_dir()), step_fn=step_fn,
            extras={**extras, **actors}, setup=learner_setup,
            finalize=partial(save_learner, init=cfg.init_dir(), out=out), out_dir=out,
            storage_path=RunDir(cfg.run_dir).path(".ray_train"), name=f"{cfg.out}-train", label=cfg.out)
    finally:
        for a in actors.values():
            ray.kill(a)
    plot_metrics(cfg, list(panels))
    if chat_model:
        from pipeline.train.model import carry_chat_defaults, mark_servable

        carry_chat_defaults(cfg.init_dir(), out)
        mark_servable(cfg.run_dir, out)
    return out
