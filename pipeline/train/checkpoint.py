"""Checkpoints of the training loop: save, restore, and the metrics rows a resume replays.

A checkpoint directory (one `ray.train.Checkpoint`) holds `state.pt` from rank 0 (model,
optimizer, scheduler, step) and `rank-R.pt` from every rank R (its torch/numpy/python RNG,
its sampling generator, and the stage's per-rank `state` dict, such as PPO's reward moments).
The data position is the step itself: batch sources and step functions derive their data
from (step, rank), so restoring the step restores what comes next.
"""

from __future__ import annotations

import os
import random
import tempfile
import time

import numpy as np
import torch


def full_state(model, opt) -> tuple[dict, dict]:
    """Full (unsharded) model and optimizer state, on CPU; a collective under FSDP."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    return get_state_dict(model, opt, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(ctx, metrics: dict) -> None:
    """Every rank reports (a barrier); rank 0 writes model/optimizer, each rank its own RNG and state."""
    import ray.train

    model_sd, optim_sd = full_state(ctx.model, ctx.opt)
    with tempfile.TemporaryDirectory() as d:
        torch.save({"rng": rng_state(), "gen": ctx.gen.get_state(), "state": ctx.state},
                   os.path.join(d, f"rank-{ctx.rank}.pt"))
        if ctx.rank == 0:
            torch.save({"model": model_sd, "optim": optim_sd, "sched": ctx.sched.state_dict(), "step": ctx.step},
                       os.path.join(d, "state.pt"))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))


def restore(ctx) -> int:
    """Load the last checkpoint into ctx (model, optimizer, scheduler, RNG, state); returns its step, 0 if none."""
    import ray.train
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return 0
    with ckpt.as_directory() as d:
        blob = torch.load(os.path.join(d, "state.pt"), map_location="cpu", weights_only=False)
        mine = os.path.join(d, f"rank-{ctx.rank}.pt")
        # A rank the earlier run did not have (more workers now) keeps its fresh seeds.
        own = torch.load(mine, map_location="cpu", weights_only=False) if os.path.exists(mine) else None
    set_state_dict(ctx.model, ctx.opt, model_state_dict=blob["model"], optim_state_dict=blob["optim"],
                   options=StateDictOptions(full_state_dict=True))
    ctx.sched.load_state_dict(blob["sched"])
    if own is not None:
        set_rng_state(own["rng"])
        ctx.gen.set_state(own["gen"])
        ctx.state.update(own["state"])
    return int(blob["step"])


def start_metrics(run, restored: int) -> None:
    """Rank 0 at start: a fresh run starts an empty metrics.jsonl; a resumed one drops the rows
    after its checkpoint (it replays those steps) and notes the resume in events.jsonl."""
    if not restored:
        run.remove("metrics.jsonl")
        return
    if run.exists("metrics.jsonl"):
        run.write_jsonl("metrics.jsonl", [r for r in run.read_jsonl("metrics.jsonl") if r.get("step", 0) <= restored])
    run.append_jsonl("events.jsonl", {"event": "resumed", "step": restored, "time": time.time()})
