"""The generic training loop on Ray Train: any model, any batches, any loss; checkpoints, resume, faults.

    python -m pytest tests/test_loop.py -q          # d2d pretrain, sft, reward and dpo build on `fit`

How a stage uses it (everything passed in must pickle: top-level functions, classes,
`functools.partial`):

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

Contract:
- A batch source's `batch(index, rank, world_size)` returns a dict of tensors that
  depends only on (index, rank, world_size) and the seed it was built with. `index` is
  `step * grad_accum + micro`. So the data position in a checkpoint is just the step,
  and a resumed run sees exactly the batches an uninterrupted run would have.
- Batches hold `input_ids`, `labels` (the target of each position, already shifted: labels[t]
  is the token after input_ids[t]; -100 where no loss), optional `attention_mask` /
  `position_ids`. `causal_lm_loss` is the default loss; SFT only masks labels; reward
  and DPO stages pass their own `loss_fn` (and `model_fn` for a custom model class).
- Checkpoints every `checkpoint_every` steps and at the end (model, optimizer, scheduler,
  step, per-rank RNG) through `ray.train.Checkpoint` into RunConfig(storage_path, name),
  keeping the last `keep_checkpoints`. Calling `fit` again with the same storage_path and
  name resumes from the last one; so does a worker failure within `max_failures`.
- Rank 0 appends `out_dir/metrics.jsonl` (step, loss, lr, tokens_per_s, grad_norm, and
  val_loss / val_bpb at evaluations); rows after the restored step are dropped on resume,
  so the curve continues without a jump, and `out_dir/events.jsonl` records the resume.
- Fault injection for tests: env `D2D_FAIL_AT_STEP=k` (read by `fit` in the driver and
  passed to workers) makes rank `D2D_FAIL_RANK` (default 0) raise at step k, unless the
  attempt was restored from a checkpoint.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch


@dataclass(kw_only=True)
class TrainConfig:
    """Training hyper-parameters and Ray Train resources; stage configs inherit these fields."""

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
    min_lr_ratio: float = 0.1
    """Cosine decay ends at lr * min_lr_ratio at max_steps."""
    warmup_steps: int = 10
    """Linear warmup steps from 0 to lr."""
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
    """Seed of model init, data order and dropout."""
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

    def __post_init__(self):
        for name in ("num_workers", "grad_accum", "batch_size", "max_steps", "checkpoint_every",
                     "keep_checkpoints", "eval_batches", "log_every", "report_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        for name in ("warmup_steps", "eval_every", "max_failures", "weight_decay", "grad_clip", "time_limit_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr: must be > 0, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio: must be in [0, 1], got {self.min_lr_ratio}")
        if self.cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker: must be > 0, got {self.cpus_per_worker}")


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to 1, then cosine decay to min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
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


def _full_state(model, opt) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state on rank 0, CPU; a collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class _Worker:
    """One Ray Train worker's state: model, optimizer, scheduler, and the step loop."""

    def __init__(self, config: dict):
        import ray.train

        from pipeline.runfs import RunDir

        self.c = config
        self.cfg: TrainConfig = config["cfg"]
        ctx = ray.train.get_context()
        self.rank, self.world = ctx.get_world_rank(), ctx.get_world_size()
        cfg = self.cfg
        torch.set_num_threads(max(1, int(cfg.cpus_per_worker)))
        if config.get("gpu") and torch.cuda.is_available():
            import ray.train.torch

            self.device = ray.train.torch.get_device()
        else:
            self.device = torch.device("cpu")
        bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and self.device.type == "cuda")
        self.autocast = dict(device_type=self.device.type, dtype=torch.bfloat16, enabled=bf16)
        torch.manual_seed(cfg.seed)  # the same initial weights on every rank
        module = config["model_fn"]().to(self.device)
        self.model = _wrap(module, cfg, self.device, self.world)
        self.opt = torch.optim.AdamW(optimizer_groups(self.model, cfg.weight_decay), lr=cfg.lr,
                                     betas=tuple(cfg.betas), fused=self.device.type == "cuda")
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, lambda s: lr_factor(s, cfg))
        torch.manual_seed(cfg.seed * 1000 + self.rank + 1)  # dropout differs per rank
        self.run = RunDir(config["out_dir"])
        self.step = self._restore()
        self._record_nodes()

    def _record_nodes(self) -> None:
        """Rank 0 appends the Ray node id of every rank to events.jsonl (where the stage ran)."""
        import ray
        import torch.distributed as dist

        node = ray.get_runtime_context().get_node_id()
        nodes = [node] * self.world
        if self.world > 1 and dist.is_initialized():
            dist.all_gather_object(nodes, node)
        if self.rank == 0:
            self.run.append_jsonl("events.jsonl", {"event": "workers", "step": self.step, "nodes": nodes,
                                                   "time": time.time()})

    def to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def _restore(self) -> int:
        import ray.train
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        ckpt = ray.train.get_checkpoint()
        self.restored = ckpt is not None
        if ckpt is None:
            if self.rank == 0:
                self.run.remove("metrics.jsonl")
            return 0
        with ckpt.as_directory() as d:
            blob = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
            rng_file = os.path.join(d, f"rng-{self.rank}.pt")
            rng = torch.load(rng_file, weights_only=False) if os.path.exists(rng_file) else None
        set_state_dict(self.model, self.opt, model_state_dict=blob["model"], optim_state_dict=blob["optim"],
                       options=StateDictOptions(full_state_dict=True))
        self.sched.load_state_dict(blob["sched"])
        if rng is not None:
            _set_rng_state(rng)
        step = int(blob["step"])
        if self.rank == 0:
            self.run.write_jsonl("metrics.jsonl", [r for r in self.run.read_jsonl("metrics.jsonl") if r["step"] <= step])
            self.run.append_jsonl("events.jsonl", {"event": "resumed", "step": step, "time": time.time()})
        return step

    def checkpoint(self, metrics: dict) -> None:
        """Every rank reports (a barrier); rank 0 writes model/optimizer, each rank its RNG."""
        import ray.train

        model_sd, optim_sd = _full_state(self.model, self.opt)
        with tempfile.TemporaryDirectory() as d:
            torch.save(_rng_state(), os.path.join(d, f"rng-{self.rank}.pt"))
            if self.rank == 0:
                torch.save({"model": model_sd, "optim": optim_sd, "sched": self.sched.state_dict(),
                            "step": self.step}, os.path.join(d, "state.pt"))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))

    def _all_sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        if self.world > 1:
            torch.distributed.all_reduce(t)
        return t.tolist()

    def evaluate(self) -> dict:
        val = self.c.get("val")
        if val is None:
            return {}
        self.model.eval()
        total = count = 0.0
        with torch.no_grad(), torch.autocast(**self.autocast):
            for i in range(self.cfg.eval_batches):
                batch = self.to_device(val.batch(i, self.rank, self.world))
                loss, stats = self.c["loss_fn"](self.model, batch)
                n = stats.get("tokens", 1)
                total += float(loss) * n
                count += n
        self.model.train()
        total, count = self._all_sum([total, count])
        out = {"val_loss": total / max(count, 1)}
        if self.c.get("bytes_per_token"):
            out["val_bpb"] = out["val_loss"] / math.log(2) / self.c["bytes_per_token"]
        return out

    def train_step(self) -> dict:
        cfg, train, loss_fn = self.cfg, self.c["train"], self.c["loss_fn"]
        sums: dict[str, float] = {}
        for micro in range(cfg.grad_accum):
            batch = self.to_device(train.batch(self.step * cfg.grad_accum + micro, self.rank, self.world))
            sync = micro == cfg.grad_accum - 1 or not hasattr(self.model, "no_sync")
            with (torch.autocast(**self.autocast), _maybe_no_sync(self.model, sync)):
                loss, stats = loss_fn(self.model, batch)
            (loss / cfg.grad_accum).backward()
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) / cfg.grad_accum
            for k, v in stats.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            sums["seq_tokens"] = sums.get("seq_tokens", 0.0) + batch["input_ids"].numel()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip or float("inf"))
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        lr = self.sched.get_last_lr()[0]
        self.sched.step()
        self.step += 1
        return {**sums, "lr": lr, "grad_norm": float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)}

    def _stop_early(self, started: float) -> bool:
        """Time budget spent? Rank 0 decides for everyone, so all workers stop at the same step."""
        if not self.cfg.time_limit_s:
            return False
        flag = torch.tensor([float(time.time() - started > self.cfg.time_limit_s)], device=self.device)
        if self.world > 1:
            torch.distributed.broadcast(flag, 0)
        return bool(flag.item())

    def loop(self) -> None:
        import ray.train

        cfg = self.cfg
        fail_at, fail_rank = self.c.get("fail_at_step"), self.c.get("fail_rank", 0)
        from pipeline.train.progress import Progress

        started = tick = time.time()
        tokens_since = 0.0
        progress = Progress(self.c.get("name", "train"), cfg.max_steps, self.step, live=self.c.get("progress_live", False))
        self.model.train()
        while self.step < cfg.max_steps:
            if fail_at is not None and self.step == fail_at and self.rank == fail_rank and not self.restored:
                raise RuntimeError(f"fault injection: rank {self.rank} fails at step {self.step} (D2D_FAIL_AT_STEP)")
            stats = self.train_step()
            tokens_since += stats.pop("seq_tokens") * self.world
            step, last = self.step, self.step == cfg.max_steps
            stop = self._stop_early(started)
            last = last or stop
            row: dict[str, Any] = {}
            if step % cfg.log_every == 0 or last:
                loss, = self._all_sum([stats["loss"]])
                now = time.time()
                row = {"step": step, "loss": loss / self.world, "lr": stats["lr"], "grad_norm": stats["grad_norm"],
                       "tokens_per_s": tokens_since / max(now - tick, 1e-9), "elapsed_s": now - started}
                tick, tokens_since = now, 0.0
            if (cfg.eval_every and step % cfg.eval_every == 0) or last:
                row.update({"step": step, **self.evaluate()})
            if row and self.rank == 0:
                self.run.append_jsonl("metrics.jsonl", {k: _round(v) for k, v in row.items()})
            if self.rank == 0:
                progress.update(step, {k: row[k] for k in ("loss", "val_loss") if k in row} or {"loss": stats["loss"]})
            metrics = {k: v for k, v in row.items() if isinstance(v, (int, float))} or {"step": step}
            if step % cfg.checkpoint_every == 0 or last:
                self.checkpoint(metrics)
            elif step % cfg.report_every == 0:
                ray.train.report(metrics)
            if stop:
                break
        finalize = self.c.get("finalize")
        if finalize is not None:
            model = _unwrap(self.model)
            if cfg.strategy == "fsdp" and self.world > 1:
                full, _ = _full_state(self.model, self.opt)  # a collective: every rank takes part
                if self.rank == 0:
                    model = self.c["model_fn"]()
                    model.load_state_dict(full)
            if self.rank == 0:
                finalize(model)


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


def train_loop_per_worker(config: dict) -> None:
    """Ray Train entry point: build, restore, train, checkpoint, finalize."""
    _Worker(config).loop()


# ---------------------------------------------------------------- the driver


def trainer(cfg: TrainConfig, *, model_fn, train, val=None, loss_fn=causal_lm_loss, finalize=None,
            out_dir: str, storage_path: str, name: str, bytes_per_token: float | None = None,
            callbacks: list | None = None):
    """The `TorchTrainer` that `fit` runs (Ray Tune trials build it themselves, with a callback)."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    from pipeline.runfs import RunDir
    from pipeline.train.progress import live_default

    fail_at = os.environ.get("D2D_FAIL_AT_STEP")
    gpu = resolve_gpu(cfg.use_gpu, name)
    loop_config = {"cfg": cfg, "model_fn": model_fn, "train": train, "val": val, "loss_fn": loss_fn,
                   "finalize": finalize, "out_dir": out_dir, "bytes_per_token": bytes_per_token,
                   "fail_at_step": int(fail_at) if fail_at else None, "gpu": gpu, "name": name,
                   "progress_live": live_default(),
                   "fail_rank": int(os.environ.get("D2D_FAIL_RANK", "0"))}
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

    Keyword arguments are `trainer`'s: model_fn, train, val, loss_fn, finalize, out_dir,
    storage_path, name, bytes_per_token. Raises `ray.train.TrainingFailedError` (a
    `WorkerGroupError`) when workers fail more than `cfg.max_failures` times.
    """
    from pipeline.runfs import RunDir

    RunDir(kwargs["out_dir"]).makedirs("")
    result = trainer(cfg, **kwargs).fit()
    return {"metrics": dict(result.metrics or {}),
            "checkpoint": result.checkpoint.path if result.checkpoint else None}
