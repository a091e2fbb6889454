"""The training loop on Ray Train, one for every training stage: setup, steps, checkpoints, resume, faults.

    python -m pytest tests/test_loop.py -q     # pretrain, SFT, reward, DPO, PPO and GRPO all run `fit`

A language-model stage passes a batch source and a loss (the default step is built from them):

    from pipeline.train.loop import TrainConfig, fit

    @dataclass(kw_only=True)
    class MyConfig(TrainConfig):            # inherit every training/resource field below
        run_dir: str = "runs/default"

    result = fit(cfg,
                 model_fn=partial(build_model, hf_config),   # () -> nn.Module, on each worker
                 train=MyBatches(...),                        # .batch(index, rank, world_size) -> dict
                 val=MyBatches(..., split="val"),             # optional, same protocol
                 loss_fn=causal_lm_loss,                       # (model, batch) -> (loss, {stats})
                 finalize=partial(save_hf, out_dir, tok_dir),  # rank 0, at the end: (model) -> None
                 out_dir="RUN/base", storage_path="RUN/.ray_train", name="base")

A stage with its own step (RL: sample rollouts through actors, then update) passes
`step_fn(ctx, step) -> {metrics}` instead of train/loss_fn, `extras` (data and actor handles,
set as attributes of ctx) and optionally `setup(ctx)` (per-worker objects that do not pickle,
such as a tokenizer and the sampler). `ctx` is a `StepContext`: cfg, rank, world, device,
model (wrapped), module (unwrapped), opt, sched, gen (a sampling generator on the device),
state (a per-rank dict that checkpoints carry), step, autocast(), to_device(), all_sum().
Everything passed in must pickle: top-level functions, classes, `functools.partial`.

Contract:
- A batch source's `batch(index, rank, world_size)` returns a dict of tensors that depends
  only on (index, rank, world_size) and its seed; `index` is `step * grad_accum + micro`. A
  step function likewise derives its data from (step, rank). So the data position in a
  checkpoint is the step, and a resumed run sees exactly what an uninterrupted one would.
- Batches hold `input_ids`, `labels` (already shifted: labels[t] is the token after
  input_ids[t]; -100 where no loss), optional `attention_mask` / `position_ids`.
- `step_fn` takes its optimizer steps through `optimizer_step` (clipping once, here) and
  returns floats; the loop adds `step`, `step_s`, and `tokens_per_s`/`elapsed_s` when the
  step reports `seq_tokens`.
- Checkpoints every `checkpoint_every` steps and at the end (pipeline.train.checkpoint:
  model, optimizer, scheduler, step, per-rank RNG, sampling generator and state) through
  `ray.train.Checkpoint` into RunConfig(storage_path, name), keeping `keep_checkpoints`.
  Calling `fit` again with the same storage_path and name resumes from the last one; so
  does a worker failure within `max_failures`.
- Rank 0 appends `out_dir/metrics.jsonl` every `log_every` steps; rows after the restored
  step are dropped on resume and `out_dir/events.jsonl` records the resume.
- Fault injection for tests: `fail_at_step=k` makes rank `fail_rank` raise at step k,
  unless the attempt was restored from a checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Literal

import torch

from pipeline.train import checkpoint


@dataclass(kw_only=True)
class TrainConfig:
    """Training hyper-parameters and Ray Train resources; every training stage's config inherits these fields."""

    num_workers: int = 2
    """Ray Train workers (one process each; data-parallel)."""
    use_gpu: bool | Literal["auto"] = False
    """true: one GPU per worker, always requested from Ray (an autoscaler adds GPU nodes); auto: GPUs if the cluster has some now, else CPU (said in the log); false: CPU and gloo."""
    cpus_per_worker: float = 1.0
    """CPUs Ray reserves per worker (also its torch intra-op threads)."""
    strategy: Literal["ddp", "fsdp"] = "ddp"
    """ddp: full replicas, gradients all-reduced. fsdp: FSDP2 `fully_shard` of every decoder layer (params, grads and optimizer state sharded)."""
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    """Autocast dtype: auto is bf16 on GPU and fp32 on CPU."""
    compile: bool = False
    """torch.compile the model (worth it on GPUs; slow to warm up on CPU)."""
    lr: float = 1e-3
    """Peak AdamW learning rate (after warmup)."""
    schedule: Literal["cosine", "constant"] = "cosine"
    """After warmup: cosine decay to lr * min_lr_ratio at max_steps, or constant."""
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr * min_lr_ratio at max_steps."""
    warmup_steps: int = 10
    """Linear warmup steps (scheduler steps) from 0 to lr."""
    weight_decay: float = 0.1
    """AdamW weight decay on matrices (not on norms, biases or 1-D params)."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (per worker)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0: no clipping; the norm is still logged)."""
    batch_size: int = 8
    """Sequences per micro-batch per worker."""
    max_steps: int = 100
    """Optimizer steps in total (a resumed run continues to this)."""
    time_limit_s: float = 0.0
    """Opt-in safety stop after this many seconds of training in this attempt (0, the default and every preset's: none);
    the last step is checkpointed. Results then depend on machine speed; budgets are `max_steps`."""
    seed: int = 0
    """Seed of model init, data order, dropout and sampling."""
    checkpoint_every: int = 50
    """Steps between checkpoints (one more is always written at the end)."""
    keep_checkpoints: int = 2
    """Checkpoints kept in Ray Train storage (the newest K)."""
    eval_every: int = 50
    """Steps between validation passes (one more at the end); 0: only at the end."""
    eval_batches: int = 8
    """Validation micro-batches per worker per evaluation."""
    log_every: int = 1
    """Steps between metrics.jsonl rows."""
    report_every: int = 50
    """Steps between ray.train.report calls without checkpoint (each is a barrier: keep it sparse)."""
    max_failures: int = 1
    """Ray Train FailureConfig: worker-group restarts from the last checkpoint before the run fails."""
    fail_at_step: int | None = None
    """Fault injection for resume tests: rank `fail_rank` raises at this step unless it was restored from a checkpoint."""
    fail_rank: int = 0
    """The rank that `fail_at_step` fails."""

    def __post_init__(self):
        for name in ("num_workers", "grad_accum", "batch_size", "max_steps", "checkpoint_every",
                     "keep_checkpoints", "eval_batches", "log_every", "report_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "max_failures", "weight_decay", "grad_clip", "time_limit_s",
                     "fail_rank"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker: must be > 0, got {self.cpus_per_worker}")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to min_lr_ratio at max_steps (or constant 1)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    span = max(1, cfg.max_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def causal_lm_loss(model, batch: dict) -> tuple[torch.Tensor, dict]:
    """Mean next-token cross-entropy over labels != -100 (labels already shifted), in fp32."""
    kwargs = {k: batch[k] for k in ("attention_mask", "position_ids") if k in batch}
    logits = model(input_ids=batch["input_ids"], **kwargs).logits
    labels = batch["labels"]
    loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
    return loss, {"tokens": int((labels != -100).sum())}


def optimizer_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (nanoGPT's rule: params with dim >= 2)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def optimizer_step(model, opt, sched, grad_clip: float) -> float:
    """Clip the global gradient norm, step the optimizer and the schedule, clear grads; returns the norm."""
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or float("inf"))
    opt.step()
    opt.zero_grad(set_to_none=True)
    sched.step()
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


# ---------------------------------------------------------------- the worker (runs inside Ray Train)


def _wrap(model: torch.nn.Module, cfg: TrainConfig, device: torch.device, world: int) -> torch.nn.Module:
    if cfg.strategy == "fsdp" and world > 1:
        from torch.distributed.fsdp import fully_shard

        layers = getattr(getattr(model, "model", model), "layers", None) or []
        for layer in layers:
            fully_shard(layer)
        fully_shard(model)
    elif world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if cfg.compile:
        model = torch.compile(model)
    return model


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    model = getattr(model, "_orig_mod", model)
    return getattr(model, "module", model)


class StepContext:
    """One worker's training state, what every step function sees (built once per attempt)."""

    def __init__(self, config: dict):
        import ray.train

        cfg = self.cfg = config["cfg"]
        rc = ray.train.get_context()
        self.rank, self.world = rc.get_world_rank(), rc.get_world_size()
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
        if config.get("gpu") and torch.cuda.is_available():
            import ray.train.torch

            self.device = ray.train.torch.get_device()
        else:
            self.device = torch.device("cpu")
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self._autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        self.module = config["model_fn"]().to(self.device)
        self.model = _wrap(self.module, cfg, self.device, self.world)
        self.opt = torch.optim.AdamW(optimizer_groups(self.model, cfg.weight_decay), lr=cfg.lr,
                                     betas=tuple(cfg.betas), fused=self.device.type == "cuda")
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        torch.manual_seed(cfg.seed * 1000 + self.rank + 1)  # dropout differs per rank
        # Sampling draws on the model's device; a generator of its own keeps rollouts reproducible.
        self.gen = torch.Generator(device=self.device).manual_seed(cfg.seed * 7919 + self.rank)
        self.state: dict = {}
        self.step = 0
        for k, v in config.get("extras", {}).items():
            setattr(self, k, v)

    def autocast(self):
        return torch.autocast(**self._autocast)

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t.tolist()

    def optimizer_step(self) -> float:
        return optimizer_step(self.model, self.opt, self.sched, self.cfg.grad_clip)


def lm_step(ctx: StepContext, step: int, *, batches, loss_fn) -> dict:
    """The default step: `grad_accum` micro-batches of `batches` through `loss_fn`, one optimizer step."""
    cfg = ctx.cfg
    sums: dict[str, float] = {}
    for micro in range(cfg.grad_accum):
        batch = ctx.to_device(batches.batch(step * cfg.grad_accum + micro, ctx.rank, ctx.world))
        sync = micro == cfg.grad_accum - 1 or not hasattr(ctx.model, "no_sync")
        with ctx.autocast(), _maybe_no_sync(ctx.model, sync):
            loss, stats = loss_fn(ctx.model, batch)
        (loss / cfg.grad_accum).backward()
        sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) / cfg.grad_accum
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + float(v)
        sums["seq_tokens"] = sums.get("seq_tokens", 0.0) + batch["input_ids"].numel()
    lr = ctx.sched.get_last_lr()[0]
    grad_norm = ctx.optimizer_step()
    loss, = ctx.all_sum([sums.pop("loss")])
    return {"loss": loss / ctx.world, "lr": lr, "grad_norm": grad_norm, "seq_tokens": sums["seq_tokens"]}


def lm_eval(ctx: StepContext, *, batches, loss_fn, bytes_per_token: float | None = None) -> dict:
    """Token-weighted validation loss over `eval_batches` micro-batches per worker (and bits per byte)."""
    ctx.model.eval()
    total = count = 0.0
    with torch.no_grad(), ctx.autocast():
        for i in range(ctx.cfg.eval_batches):
            loss, stats = loss_fn(ctx.model, ctx.to_device(batches.batch(i, ctx.rank, ctx.world)))
            n = stats.get("tokens", 1)
            total += float(loss) * n
            count += n
    ctx.model.train()
    total, count = ctx.all_sum([total, count])
    out = {"val_loss": total / max(count, 1)}
    if bytes_per_token:
        out["val_bpb"] = out["val_loss"] / math.log(2) / bytes_per_token
    return out


class _maybe_no_sync:
    """DDP's no_sync() for all but the last micro-batch (gradient all-reduce once per step)."""

    def __init__(self, model, sync: bool):
        self.cm = None if sync else model.no_sync()

    def __enter__(self):
        return self.cm.__enter__() if self.cm else None

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc) if self.cm else False


def _round(v):
    return round(v, 6) if isinstance(v, float) else v


def _stop_early(ctx: StepContext, started: float) -> bool:
    """Time budget spent? Rank 0 decides for everyone, so all workers stop at the same step."""
    if not ctx.cfg.time_limit_s:
        return False
    flag = torch.tensor([float(time.time() - started > ctx.cfg.time_limit_s)], device=ctx.device)
    if ctx.world > 1:
        torch.distributed.broadcast(flag, 0)
    return bool(flag.item())


#: Metrics shown on the progress line, when a stage reports them.
PROGRESS_KEYS = ("loss", "val_loss", "reward", "accuracy", "kl", "heldout_accuracy")


def _record_nodes(ctx: StepContext, run) -> None:
    """Rank 0 appends the Ray node id of every rank to events.jsonl (where the stage ran)."""
    import ray
    import torch.distributed as dist

    node = ray.get_runtime_context().get_node_id()
    nodes = [node] * ctx.world
    if ctx.world > 1 and dist.is_initialized():
        dist.all_gather_object(nodes, node)
    if ctx.rank == 0:
        run.append_jsonl("events.jsonl", {"event": "workers", "step": ctx.step, "nodes": nodes, "time": time.time()})


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: build, restore, step, log, checkpoint, finalize."""
    import ray.train

    from pipeline.runfs import RunDir
    from pipeline.train.progress import Progress

    ctx = StepContext(config)
    cfg = ctx.cfg
    run = RunDir(config["out_dir"])
    restored = ctx.step = checkpoint.restore(ctx)
    if ctx.rank == 0:
        checkpoint.start_metrics(run, restored)
    _record_nodes(ctx, run)
    if config.get("setup") is not None:
        config["setup"](ctx)
    step_fn, eval_fn = config["step_fn"], config.get("eval_fn")
    progress = Progress(config.get("label") or config["name"], cfg.max_steps, restored,
                        live=config.get("progress_live", False))
    started = tick = time.time()
    tokens_since, steps_since = 0.0, 0
    ctx.model.train()
    while ctx.step < cfg.max_steps:
        if ctx.step == cfg.fail_at_step and ctx.rank == cfg.fail_rank and not restored:
            raise RuntimeError(f"fault injection: rank {ctx.rank} fails at step {ctx.step} (fail_at_step)")
        stats = step_fn(ctx, ctx.step)
        ctx.step += 1
        step = ctx.step
        steps_since += 1
        counted = "seq_tokens" in stats
        tokens_since += stats.pop("seq_tokens", 0.0) * ctx.world
        stop = _stop_early(ctx, started)
        last = step == cfg.max_steps or stop
        row: dict[str, Any] = {}
        if step % cfg.log_every == 0 or last:
            now = time.time()
            row = {"step": step, **stats, "step_s": round((now - tick) / steps_since, 3)}
            if counted:
                row.update(tokens_per_s=tokens_since / max(now - tick, 1e-9), elapsed_s=now - started)
            tick, tokens_since, steps_since = now, 0.0, 0
        if eval_fn is not None and ((cfg.eval_every and step % cfg.eval_every == 0) or last):
            row.update({"step": step, **eval_fn(ctx)})
        if row and ctx.rank == 0:
            run.append_jsonl("metrics.jsonl", {k: _round(v) for k, v in row.items()})
        if ctx.rank == 0:
            progress.update(step, {k: row.get(k, stats.get(k)) for k in PROGRESS_KEYS if k in row or k in stats})
        metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))} or {"step": step}
        if step % cfg.checkpoint_every == 0 or last:
            checkpoint.save(ctx, metrics)
        elif step % cfg.report_every == 0:
            ray.train.report(metrics)
        if stop:
            break
    finalize = config.get("finalize")
    if finalize is not None:
        model = _unwrap(ctx.model)
        if cfg.strategy == "fsdp" and ctx.world > 1:
            full, _ = checkpoint.full_state(ctx.model, ctx.opt)  # a collective: every rank takes part
            if ctx.rank == 0:
                model = config["model_fn"]()
                model.load_state_dict(full)
        if ctx.rank == 0:
            finalize(model)


# ---------------------------------------------------------------- the driver


def trainer(cfg: TrainConfig, *, model_fn, out_dir: str, storage_path: str, name: str, step_fn=None,
            train=None, val=None, loss_fn=causal_lm_loss, eval_fn=None, bytes_per_token: float | None = None,
            extras: dict | None = None, setup=None, finalize=None, label: str | None = None,
            callbacks: list | None = None):
    """The `TorchTrainer` that `fit` runs (Ray Tune trials build it themselves, with a callback).

    Either `step_fn` or `train` (a batch source, stepped with `loss_fn` by `lm_step`); `val`
    (or `eval_fn(ctx) -> {metrics}`) is evaluated every `eval_every` steps and at the end."""
    from functools import partial

    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.runfs import RunDir
    from pipeline.train.progress import live_default

    if (step_fn is None) == (train is None):
        raise ValueError("trainer: pass exactly one of step_fn and train")
    step_fn = step_fn or partial(lm_step, batches=train, loss_fn=loss_fn)
    if eval_fn is None and val is not None:
        eval_fn = partial(lm_eval, batches=val, loss_fn=loss_fn, bytes_per_token=bytes_per_token)
    gpu = resolve_gpu(cfg.use_gpu, label or name)
    loop_config = {"cfg": cfg, "model_fn": model_fn, "step_fn": step_fn, "eval_fn": eval_fn, "extras": extras or {},
                   "setup": setup, "finalize": finalize, "out_dir": out_dir, "gpu": gpu, "name": name,
                   "label": label, "progress_live": live_default()}
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        torch_config=TorchConfig(backend="nccl" if gpu else "gloo"),
        scaling_config=ray.train.ScalingConfig(num_workers=cfg.num_workers, use_gpu=gpu,
                                               resources_per_worker={"CPU": cfg.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=name, callbacks=callbacks, **RunDir(storage_path).ray_storage(""),
            failure_config=ray.train.FailureConfig(max_failures=cfg.max_failures),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.keep_checkpoints)),
    )


def resolve_gpu(use_gpu: bool | str, stage: str) -> bool:
    """Whether workers ask Ray for GPUs. `true` always does (a cluster may scale GPU nodes up on
    demand, so "none now" is no reason to train on CPU); `auto` does when the cluster has GPUs
    now and otherwise says, on the stage's log, that it trains on CPU."""
    if use_gpu != "auto":
        return bool(use_gpu)
    import ray

    gpus = ray.cluster_resources().get("GPU", 0)
    print(f"[{stage}] use_gpu=auto: " + (f"{gpus:g} GPUs in the cluster, training on GPU" if gpus
                                         else "no GPU in the cluster now, training on CPU"), flush=True)
    return gpus > 0


def fit(cfg: TrainConfig, **kwargs) -> dict:
    """Run (or resume) training on Ray Train; returns the last reported metrics and checkpoint path.

    Keyword arguments are `trainer`'s. Raises `ray.train.TrainingFailedError` (a
    `WorkerGroupError`) when workers fail more than `cfg.max_failures` times.
    """
    from pipeline.runfs import RunDir

    RunDir(kwargs["out_dir"]).makedirs("")
    result = trainer(cfg, **kwargs).fit()
    return {"metrics": dict(result.metrics or {}),
            "checkpoint": result.checkpoint.path if result.checkpoint else None}
