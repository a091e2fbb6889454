"""`d2d pretrain`: next-token pretraining of the base model on the token shards, on Ray Train.

    d2d pretrain --config tiny --run-dir runs/demo --set max_steps=50
    d2d pretrain --config tiny --run-dir runs/demo --tune lr=loguniform:1e-4:3e-3 --trials 4

Reads RUN/tokens (shards + manifest, made by `d2d tokenize`) and RUN/tokenizer; builds a
Llama-style model from a preset (`pipeline.train.model`) sized to the data's vocabulary and
context; trains it with the generic loop (`pipeline.train.loop.fit`: DDP or FSDP2,
checkpoints into RUN/.ray_train/<out>, resume by re-running, FailureConfig). Writes RUN/base/:
HF model + tokenizer, metrics.jsonl, loss.png, samples.json, pretrain.json. With `tune`,
runs a Ray Tune ASHA search whose trials are TorchTrainers and prints the best config.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from functools import partial
from typing import ClassVar

import numpy as np
import torch

from pipeline.errors import StageError
from pipeline.runfs import RunDir, is_remote
from pipeline.train.loop import TrainConfig, fit, trainer
from pipeline.train.model import MODEL_PRESETS, build_model, describe, llama_config

TUNE_KINDS = ("loguniform", "uniform", "randint", "choice")


@dataclass(kw_only=True)
class PretrainConfig(TrainConfig):
    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"model": "tiny", "batch_size": 8, "lr": 3e-3, "warmup_steps": 10, "max_steps": 200,
                 "checkpoint_every": 25, "eval_every": 25, "eval_batches": 4, "report_every": 25},
        "small": {"model": "small", "batch_size": 16, "lr": 1e-3, "warmup_steps": 200,
                  "max_steps": 5000, "checkpoint_every": 500, "eval_every": 250},
        "gpt2": {"model": "gpt2", "batch_size": 16, "grad_accum": 4, "lr": 6e-4, "warmup_steps": 700,
                 "max_steps": 20000, "use_gpu": True, "checkpoint_every": 1000, "eval_every": 500,
                 "log_every": 10, "report_every": 100},
        "1b": {"model": "1b", "batch_size": 8, "grad_accum": 8, "lr": 3e-4, "warmup_steps": 2000,
               "max_steps": 50000, "use_gpu": True, "strategy": "fsdp", "compile": True,
               "checkpoint_every": 1000, "eval_every": 1000, "log_every": 10, "report_every": 100},
    }
    run_dir: str = "runs/default"
    """Run directory (local path or s3:// URI): reads RUN/tokens and RUN/tokenizer, writes RUN/<out>."""
    model: str = "tiny"
    """Architecture preset: tiny, small, gpt2, 1b (see pipeline/train/model.py)."""
    model_overrides: dict = field(default_factory=dict)
    """LlamaConfig fields over the preset, as JSON (e.g. {"num_hidden_layers": 4})."""
    tie_embeddings: bool = True
    """Share the input embedding and output projection weights."""
    tokens: str = ""
    """Token shards folder; empty: RUN/tokens."""
    tokenizer: str = ""
    """Tokenizer folder saved with the model; empty: RUN/tokenizer, else the manifest's."""
    out: str = "base"
    """Output folder name under the run directory (also the Ray Train run name)."""
    samples: int = 3
    """Continuations sampled at the end (prompts: the first tokens of validation rows)."""
    sample_tokens: int = 48
    """New tokens per sampled continuation."""
    tune: list[str] = field(default_factory=list)
    """Ray Tune search space, FIELD=KIND:ARGS with KIND loguniform:lo:hi | uniform:lo:hi | randint:lo:hi | choice:a|b|c."""
    trials: int = 4
    """Ray Tune trials (ASHA stops the worst early on validation loss)."""
    ray_num_cpus: int | None = None
    """CPUs of the embedded local Ray (default: the machine's)."""

    def __post_init__(self):
        super().__post_init__()
        if self.model not in MODEL_PRESETS:
            raise ValueError(f"model: {self.model!r} is not one of {', '.join(MODEL_PRESETS)}")
        if self.trials < 1:
            raise ValueError(f"trials: must be >= 1, got {self.trials}")
        parse_tune(self.tune)


def parse_tune(specs: list[str]) -> dict:
    """`["lr=loguniform:1e-4:3e-3"]` -> a Ray Tune param_space; bad specs raise ValueError naming `tune`."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    space = {}
    for spec in specs:
        key, _, rule = spec.partition("=")
        kind, _, args = rule.partition(":")
        if key not in names:
            raise ValueError(f"tune: {key!r} is not a training field ({', '.join(sorted(names))})")
        if kind not in TUNE_KINDS:
            raise ValueError(f"tune: {spec!r}: kind must be one of {', '.join(TUNE_KINDS)}")
        from ray import tune

        try:
            if kind == "choice":
                space[key] = tune.choice([json.loads(a) if a[:1].isdigit() else a for a in args.split("|")])
            else:
                lo, hi = (float(a) for a in args.split(":"))
                space[key] = {"loguniform": tune.loguniform, "uniform": tune.uniform,
                              "randint": lambda a, b: tune.randint(int(a), int(b))}[kind](lo, hi)
        except ValueError:
            raise ValueError(f"tune: {spec!r}: expected {kind}:LO:HI") from None
    return space


class ShardBatches:
    """Deterministic batches from token shards: batch(index, rank, world) -> input_ids/labels.

    Row positions are global: micro-batch `index` of rank r takes rows
    [(index*world + r)*B, ... +B) of an endless stream that walks a fresh seeded
    permutation of the split each epoch (no shuffle for validation). Pickles (Ray workers).
    """

    def __init__(self, tokens_dir: str, split: str, batch_size: int, seed: int, shuffle: bool = True):
        from pipeline.shards import ShardReader

        self.reader = ShardReader(tokens_dir, split)
        if self.reader.num_sequences == 0:
            raise StageError(f"{tokens_dir}: split {split!r} has no sequences; tokenize more text")
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self._perms: dict[int, np.ndarray] = {}

    def __getstate__(self):
        return {**self.__dict__, "_perms": {}}

    def rows(self, index: int, rank: int, world_size: int) -> np.ndarray:
        n = self.reader.num_sequences
        pos = (index * world_size + rank) * self.batch_size + np.arange(self.batch_size)
        if not self.shuffle:
            return pos % n
        out = np.empty_like(pos)
        for i, (epoch, within) in enumerate(zip(pos // n, pos % n, strict=True)):
            if epoch not in self._perms:
                self._perms = {epoch: np.random.default_rng([self.seed, int(epoch)]).permutation(n)}
            out[i] = self._perms[epoch][within]
        return out

    def batch(self, index: int, rank: int, world_size: int) -> dict:
        rows = torch.from_numpy(self.reader.read(self.rows(index, rank, world_size)))
        return {"input_ids": rows[:, :-1].contiguous(), "labels": rows[:, 1:].contiguous()}


def bytes_per_token(tok, reader, max_rows: int = 64) -> float:
    """UTF-8 bytes of text per token on validation rows (special tokens count as tokens, not bytes)."""
    rows = reader.read(np.arange(min(max_rows, reader.num_sequences)))
    n_bytes = sum(len(tok.decode(r.tolist(), skip_special_tokens=True).encode("utf-8")) for r in rows)
    return n_bytes / max(rows.size, 1)


def finalize_base(model, *, out_dir: str, tokenizer_dir: str, prompts: list[list[int]], sample_tokens: int,
                  seed: int) -> None:
    """Rank 0 at the end: save_pretrained model + tokenizer into out_dir, sample a few continuations."""
    import shutil
    import tempfile

    from pipeline.tokenizer import load_tokenizer, save_tokenizer

    tok = load_tokenizer(tokenizer_dir)
    model = model.to("cpu").eval()
    local = tempfile.mkdtemp(prefix="d2d-base-") if is_remote(out_dir) else out_dir
    model.save_pretrained(local)
    save_tokenizer(tok, local)
    samples = []
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in prompts:
            room = model.config.max_position_embeddings - len(p)  # RoPE was trained on this context only
            ids = model.generate(torch.tensor([p]), max_new_tokens=max(1, min(sample_tokens, room)), do_sample=True, top_k=50,
                                 temperature=0.8, pad_token_id=tok.pad_token_id)[0]
            samples.append({"prompt": tok.decode(p), "continuation": tok.decode(ids[len(p):].tolist())})
    with open(os.path.join(local, "samples.json"), "w") as f:
        json.dump(samples, f, indent=2)
    if local != out_dir:
        RunDir(out_dir).upload_dir(local)
        shutil.rmtree(local, ignore_errors=True)


def _inputs(cfg: PretrainConfig) -> tuple[str, str, dict]:
    run = RunDir(cfg.run_dir)
    tokens = cfg.tokens or run.require("tokens/manifest.json", made_by="tokenize").rsplit("/", 1)[0]
    manifest = RunDir(tokens).read_json("manifest.json") if RunDir(tokens).exists("manifest.json") else None
    if manifest is None:
        raise StageError(f"{tokens}/manifest.json not found: run `d2d tokenize --run-dir {cfg.run_dir}` first")
    tok_dir = cfg.tokenizer or (run.path("tokenizer") if run.exists("tokenizer/tokenizer.json")
                                else manifest.get("tokenizer", ""))
    if not tok_dir or not RunDir(tok_dir).exists("tokenizer.json"):
        raise StageError(f"tokenizer not found (looked for {tok_dir or run.path('tokenizer')}): "
                         f"run `d2d tokenizer --run-dir {cfg.run_dir}` or set tokenizer")
    return tokens, tok_dir, manifest


def fit_kwargs(cfg: PretrainConfig) -> tuple[dict, dict]:
    """Everything `loop.fit` needs for this config, plus a description of the model."""
    from pipeline.tokenizer import load_tokenizer

    tokens, tok_dir, manifest = _inputs(cfg)
    seq_len = int(manifest["seq_len"])
    hf_config = llama_config(cfg.model, vocab_size=int(manifest["vocab_size"]), seq_len=seq_len,
                             tie_embeddings=cfg.tie_embeddings, eos_token_id=manifest.get("eot_id"),
                             pad_token_id=manifest.get("pad_id"), **cfg.model_overrides)
    train = ShardBatches(tokens, "train", cfg.batch_size, cfg.seed)
    val = ShardBatches(tokens, "val", cfg.batch_size, cfg.seed, shuffle=False) if "val" in manifest["splits"] and \
        manifest["splits"]["val"]["sequences"] > 0 else None
    tok = load_tokenizer(tok_dir)
    bpt = bytes_per_token(tok, (val or train).reader)
    prompt_rows = (val or train).reader.read(np.arange(min(cfg.samples, (val or train).reader.num_sequences)))
    prompts = [r[: min(16, seq_len // 2)].tolist() for r in prompt_rows]
    out_dir = RunDir(cfg.run_dir).path(cfg.out)
    kwargs = dict(model_fn=partial(build_model, hf_config, cfg.seed), train=train, val=val,
                  finalize=partial(finalize_base, out_dir=out_dir, tokenizer_dir=tok_dir, prompts=prompts,
                                   sample_tokens=cfg.sample_tokens, seed=cfg.seed),
                  out_dir=out_dir, storage_path=RunDir(cfg.run_dir).path(".ray_train"), name=cfg.out,
                  bytes_per_token=bpt)
    info = {**describe(hf_config, seq_len), "seq_len": seq_len, "vocab_size": hf_config.vocab_size,
            "bytes_per_token": round(bpt, 4), "tokens_per_step": cfg.batch_size * cfg.grad_accum *
            cfg.num_workers * seq_len, "train_sequences": train.reader.num_sequences}
    return kwargs, info


def run(cfg: PretrainConfig) -> dict:
    from pipeline.train.plots import plot_metrics

    kwargs, info = fit_kwargs(cfg)
    if cfg.tune:
        return tune_search(cfg, kwargs)
    print(f"[pretrain] model {cfg.model}: {info['parameters'] / 1e6:.2f}M params, "
          f"{info['flops_per_token']:.3g} FLOPs/token, {info['tokens_per_step']} tokens/step", flush=True)
    result = fit(cfg, **kwargs)
    out = RunDir(kwargs["out_dir"])
    rows = [json.loads(x) for x in out.read_text("metrics.jsonl").splitlines() if x.strip()]
    plots = plot_metrics(rows, kwargs["out_dir"])
    evals = [r for r in rows if "val_loss" in r]
    summary = {"config": dataclasses.asdict(cfg), "model": info, "steps": rows[-1]["step"] if rows else 0,
               "final": evals[-1] if evals else (rows[-1] if rows else {}),
               "checkpoint": result["checkpoint"]}
    out.write_json("pretrain.json", summary)
    samples = out.read_json("samples.json") if out.exists("samples.json") else []
    for s in samples:
        print(f"[sample] {s['prompt']!r} -> {s['continuation']!r}", flush=True)
    final = summary["final"]
    return {"artifacts": kwargs["out_dir"], "steps": summary["steps"], "parameters": info["parameters"],
            "val_loss": final.get("val_loss"), "val_bpb": final.get("val_bpb"),
            "loss": final.get("loss"), "plots": plots}


# ---------------------------------------------------------------- Ray Tune


def _tune_trial(params: dict, *, cfg: PretrainConfig, kwargs: dict) -> None:
    """One Tune trial: a TorchTrainer with the sampled fields; metrics flow to Tune via the callback."""
    from ray import tune
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_cfg = dataclasses.replace(cfg, **params, tune=[])
    name = tune.get_context().get_trial_name()
    kw = {**kwargs, "finalize": None, "name": f"tune-{name}",
          "out_dir": RunDir(kwargs["out_dir"]).path("tune", name)}
    trainer(trial_cfg, callbacks=[TuneReportCallback()], **kw).fit()


def tune_search(cfg: PretrainConfig, kwargs: dict) -> dict:
    """ASHA over `cfg.tune`: each trial a TorchTrainer; one trial at a time unless the cluster has room."""
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler

    metric = "val_loss" if kwargs["val"] is not None else "loss"
    reports = max(1, cfg.max_steps // min(cfg.report_every, cfg.checkpoint_every))
    per_trial = cfg.num_workers * cfg.cpus_per_worker
    concurrent = max(1, int(ray.cluster_resources().get("CPU", 1) // per_trial))
    tuner = tune.Tuner(
        # The trial only waits on its TorchTrainer: it asks for memory, not a CPU the workers need
        # (Tune rejects an empty request).
        tune.with_resources(tune.with_parameters(_tune_trial, cfg=cfg, kwargs=kwargs), {"memory": 64 * 2**20}),
        param_space=parse_tune(cfg.tune),
        tune_config=tune.TuneConfig(num_samples=cfg.trials, max_concurrent_trials=concurrent,
                                    scheduler=ASHAScheduler(metric=metric, mode="min", max_t=reports,
                                                            grace_period=max(1, reports // 4))),
        run_config=tune.RunConfig(name=f"{cfg.out}-tune", **RunDir(cfg.run_dir).ray_storage(".ray_tune")),
    )
    results = tuner.fit()
    best = results.get_best_result(metric=metric, mode="min")
    trials = [{**r.config, metric: (r.metrics or {}).get(metric), "steps": (r.metrics or {}).get("step")}
              for r in results]
    doc = {"metric": metric, "best_config": best.config, f"best_{metric}": best.metrics.get(metric),
           "trials": trials}
    RunDir(cfg.run_dir).write_json(f"{cfg.out}/tune.json", doc)
    print(f"[pretrain tune] best config: {best.config} ({metric} {best.metrics.get(metric):.4f})", flush=True)
    return {"artifacts": RunDir(cfg.run_dir).path(f"{cfg.out}/tune.json"), **doc}

