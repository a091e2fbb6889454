"""Online RL on Ray Train, shared by PPO and GRPO: config fields, learner loop, clipped update.

    d2d grpo --config tiny --run-dir runs/demo      # or d2d ppo: both run `fit_rl`

A learner is a Ray Train worker holding the policy (plus a value head for PPO). Each
step it samples rollouts from its own copy with the KV cache, asks the frozen
reference (and reward) actors for what it needs, and takes clipped-surrogate
minibatch steps; DDP keeps the workers' copies equal, so no weight broadcast to a
separate sampler is needed. Checkpoints (weights, optimizer, step, stage state) go
to Ray Train storage every `checkpoint_every` steps; re-running the same command or
a worker failure within `max_failures` resumes from the last one (noted in
RUN/out/events.jsonl). Rank 0 appends `metrics.jsonl`, then saves the policy as an HF
folder; the driver adds PNG plots of the metrics.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Literal

import torch

from pipeline.train.losses import (
    entropy_from_logits,
    kl_estimate,
    masked_mean,
    ppo_policy_loss,
    value_loss,
)
from pipeline.train.rollout import ReferenceModel, Rollout, sample


@dataclass(kw_only=True)
class LearnerCommon:
    """Fields every learner stage on this loop shares (PPO, GRPO, DPO)."""

    run_dir: str = "runs/default"
    """Run directory (local path or fsspec URI such as s3://bucket/runs/x); the policy comes from RUN/sft unless `init` is set."""
    init: str = ""
    """Policy (and reference) model folder, path or URI; empty: RUN/sft."""
    max_steps: int = 200
    """Optimizer steps (RL: one rollout batch each)."""
    time_limit_s: float = 0.0
    """Stop after this many seconds of training (0: no limit); the steps done are saved."""
    lr: float = 1e-5
    """AdamW learning rate (constant after a short warmup)."""
    warmup_steps: int = 5
    """Linear warmup steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm."""
    seed: int = 0
    """Seed for sampling and data order."""
    num_workers: int = 1
    """Ray Train learner workers (DDP)."""
    cpus_per_worker: float = 1.0
    """CPUs per learner (also its torch threads)."""
    use_gpu: bool | Literal["auto"] = False
    """true: one GPU per learner, always requested from Ray; auto: GPUs if the cluster has some now, else CPU (said in the log)."""
    checkpoint_every: int = 20
    """Steps between checkpoints (and Ray Train reports)."""
    max_failures: int = 1
    """Ray Train FailureConfig: learner-group restarts from the last checkpoint before giving up."""
    fail_at_step: int | None = None
    """Fault injection for resume tests: a learner raises at this step unless it was restored from a checkpoint."""

    def __post_init__(self):
        for name in ("max_steps", "num_workers", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker: must be > 0, got {self.cpus_per_worker}")
        if self.max_failures < 0:
            raise ValueError(f"max_failures: must be >= 0, got {self.max_failures}")

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
    cfg = ctx.cfg
    mask = ro.response_mask.float()
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
            logp, ent, values = ctx.model(ids.to(ctx.device), am.to(ctx.device), ro.prompt_len, cfg.temperature)
            logp, ent = logp.cpu(), ent.cpu()
            loss, st = ppo_policy_loss(logp, ro.logprobs[idx][:, :cols], advantages[idx][:, :cols], m, cfg.clip_eps)
            stats = {"policy_loss": loss.item(), "clip_frac": st["clip_frac"].item(),
                     "approx_kl": st["approx_kl"].item(), "entropy": masked_mean(ent, m).item()}
            if ref_logp is not None and cfg.kl_coef > 0:
                kl = masked_mean(kl_estimate(logp, ref_logp[idx][:, :cols], cfg.kl_estimator), m)
                loss = loss + cfg.kl_coef * kl
                stats["kl_loss"] = kl.item()
            if values is not None:
                vl = value_loss(values.cpu(), old_values[idx][:, :cols], returns[idx][:, :cols], m, value_clip)
                loss = loss + vf_coef * vl
                stats["value_loss"] = vl.item()
            ctx.opt.zero_grad(set_to_none=True)
            loss.backward()
            stats["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), cfg.max_grad_norm))
            ctx.opt.step()
            ctx.sched.step()
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


# ---------------------------------------------------------------- the learner (a Ray Train worker)


def _setup(config: dict):
    import ray.train
    from transformers import AutoModelForCausalLM

    from pipeline.runfs import local_path
    from pipeline.tokenizer import load_tokenizer, stop_token_ids

    cfg = config["cfg"]
    ctx_ = ray.train.get_context()
    rank, world = ctx_.get_world_rank(), ctx_.get_world_size()
    torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
    torch.manual_seed(cfg.seed + rank)
    device = torch.device("cuda" if config.get("gpu") and torch.cuda.is_available() else "cpu")
    init = local_path(cfg.init_dir())
    tok = load_tokenizer(init)
    if config.get("model") == "reward":
        from pipeline.train.reward import init_reward_model

        policy = init_reward_model(init, tok.pad_token_id).to(device)
    else:
        lm = AutoModelForCausalLM.from_pretrained(init, dtype=torch.float32)
        policy = PolicyValue(lm, with_value=config.get("model") == "policy_value").to(device)
    model = policy
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(policy, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(policy.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, cfg.warmup_steps)))
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + rank)

    def sample_fn(prompt_ids: list[list[int]]) -> Rollout:
        return sample(policy.lm, prompt_ids, max_new_tokens=cfg.max_new_tokens, eos_ids=stop_token_ids(tok),
                      pad_id=tok.pad_token_id, temperature=cfg.temperature, generator=gen)


    ctx = SimpleNamespace(cfg=cfg, rank=rank, world=world, device=device, tok=tok, policy=policy, model=model,
                          opt=opt, sched=sched, gen=gen, sample=sample_fn, step=0, state={},
                          **config.get("extras", {}))

    def ref_logprobs(ro: Rollout) -> torch.Tensor:
        return ray.get(ctx.ref.logprobs.remote(ro.input_ids, ro.attention_mask, ro.prompt_len, cfg.temperature))

    ctx.ref_logprobs = ref_logprobs
    return ctx


def _save_checkpoint(ctx, step: int, metrics: dict) -> None:
    import ray.train

    with tempfile.TemporaryDirectory() as d:
        if ctx.rank == 0:
            torch.save({"model": ctx.policy.state_dict(), "opt": ctx.opt.state_dict(),
                        "sched": ctx.sched.state_dict(), "gen": ctx.gen.get_state(),
                        "step": step, "state": ctx.state}, os.path.join(d, "rl.pt"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
        else:
            ray.train.report(metrics)


def _restore(ctx) -> int:
    import ray.train

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0
    with ckpt.as_directory() as d:
        blob = torch.load(os.path.join(d, "rl.pt"), map_location=ctx.device, weights_only=False)
    ctx.policy.load_state_dict(blob["model"])
    ctx.opt.load_state_dict(blob["opt"])
    ctx.sched.load_state_dict(blob["sched"])
    ctx.gen.set_state(blob["gen"])
    ctx.state.update(blob["state"])
    return blob["step"]


def _stop_now(ctx, started: float) -> bool:
    """Whether the time budget is spent; every learner takes rank 0's answer so they stop together."""
    flag = torch.tensor([float(ctx.cfg.time_limit_s > 0 and time.time() - started > ctx.cfg.time_limit_s)])
    if ctx.world > 1:
        torch.distributed.broadcast(flag, 0)
    return bool(flag.item())


def train_loop(config: dict) -> None:
    """Ray Train entry: restore, then RL steps with sparse reports and checkpoints, then save."""
    from cluster.stages import _load
    from pipeline.runfs import RunDir

    cfg = config["cfg"]
    step_fn = _load(config["step_fn"])
    ctx = _setup(config)
    restored = _restore(ctx)
    run, rel = RunDir(cfg.run_dir), f"{cfg.out}/metrics.jsonl"
    if ctx.rank == 0:
        _truncate_metrics(run, rel, restored)
        if restored:
            run.append_jsonl(f"{cfg.out}/events.jsonl", {"event": "resumed", "step": restored, "time": time.time()})
    started = time.time()
    step = restored
    for step in range(restored, cfg.max_steps):
        if cfg.fail_at_step == step and restored == 0:
            raise RuntimeError(f"fault injection: learner fails at step {step} (fail_at_step)")
        ctx.step = step
        t0 = time.time()
        stats = step_fn(ctx, step)
        row = {"step": step + 1, **{k: round(v, 6) for k, v in stats.items()}, "step_s": round(time.time() - t0, 3)}
        if ctx.rank == 0:
            run.append_jsonl(rel, row)
        stop = _stop_now(ctx, started)
        if (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.max_steps or stop:
            _save_checkpoint(ctx, step + 1, row)
        if stop:
            break
    if ctx.rank == 0:
        save_policy(getattr(ctx.policy, "lm", ctx.policy), ctx.tok, cfg.out_dir())


def _truncate_metrics(run, rel: str, restored: int) -> None:
    """A resumed run replays the steps after its checkpoint: drop their old rows first."""
    if run.exists(rel):
        run.write_jsonl(rel, [r for r in run.read_jsonl(rel) if r.get("step", 0) <= restored])


def save_policy(lm, tok, out: str) -> None:
    from pipeline.train.model import save_chat_model

    save_chat_model(out, lm, tok)


def plot_metrics(cfg, panels: list[tuple[str, ...]]) -> list[str]:
    """PNG curves of RUN/out/metrics.jsonl, one per panel of metric names; returns the files written."""
    from pipeline.runfs import RunDir
    from pipeline.train.plots import plot_metrics as plot_rows

    rows = RunDir(cfg.run_dir).read_jsonl(f"{cfg.out}/metrics.jsonl")
    return plot_rows(rows, cfg.out_dir(), [("_".join(keys), keys) for keys in panels])


def fit_rl(cfg, step_fn: str, extras: dict, *, model: str = "policy", actors: dict | None = None,
           reference: bool | None = None, panels: list[tuple[str, ...]] = ()) -> str:
    """Start the reference actor (default: when kl_coef > 0), run the learners on Ray Train; returns RUN/out.

    `model` is what each learner trains: "policy" (the LM), "policy_value" (LM + value head,
    PPO) or "reward" (a sequence-scoring reward model from INIT's backbone).
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from pipeline.runfs import RunDir
    from pipeline.train.loop import resolve_gpu
    from pipeline.train.rollout import spawn

    gpu = resolve_gpu(cfg.use_gpu, cfg.out)
    actors = dict(actors or {})
    if reference if reference is not None else getattr(cfg, "kl_coef", 0) > 0:
        actors["ref"] = spawn(Reference, cfg.init_dir(), num_cpus=cfg.ref_num_cpus, num_gpus=cfg.ref_num_gpus)
    out = RunDir(cfg.run_dir).makedirs(cfg.out)
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"cfg": cfg, "step_fn": step_fn, "model": model, "gpu": gpu,
                           "extras": {**extras, **actors}},
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=gpu,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=f"{cfg.out}-train", **RunDir(cfg.run_dir).ray_storage(".ray_train"),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=2)),
    )
    trainer.fit()
    for a in actors.values():
        ray.kill(a)
    plot_metrics(cfg, list(panels))
    return out
