"""`d2d sft`: supervised fine-tuning of the base model into an assistant, on Ray Train.

    d2d sft --config tiny --run-dir runs/demo                          # built-in mixture
    d2d sft --run-dir runs/demo --input chats.jsonl --format sharegpt  # mixture + your file

Data: a built-in mixture (identity conversations with a configurable name and
maker, verifiable arithmetic) plus any files, converted to OpenAI-style messages
(`pipeline.chat.converters`); malformed rows are counted and kept aside in
RUN/sft/rejects.jsonl. A share of conversations get the default system prompt.
Encoding is the tokenizer's ChatML with loss on every assistant turn including
its `<|im_end|>`; rows are packed (best fit) or padded to `max_len`, truncation
counted. A deterministic held-out split gives the validation loss and is saved
as RUN/sft/val.jsonl for `d2d eval`. Training is the shared loop
(`pipeline.train.loop.fit`: Ray Train, checkpoints and resume, FailureConfig,
warmup + cosine, metrics.jsonl), with optional LoRA (PEFT) merged into the saved
weights. Output: RUN/sft/ in HF format with tokenizer and chat template,
sft.json (data report and chat defaults), metrics.jsonl and loss/lr plots.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import ClassVar

from pipeline.chat.encode import SFTBatches, save_rows, sft_loss
from pipeline.errors import StageError
from pipeline.train.loop import TrainConfig


@dataclass(kw_only=True)
class SFTConfig(TrainConfig):
    """SFT data and output fields; training and resource fields come from `TrainConfig` (the loop)."""

    presets: ClassVar[dict[str, dict]] = {
        # The demo recipe: formulaic short replies a tiny model learns to end in minutes on CPU.
        "tiny": {"identity_n": 300, "arith_n": 1500, "arith_ops": "+-", "arith_hi": 19,
                 "max_len": 256, "batch_size": 8, "epochs": 3, "lr": 1e-3, "warmup_steps": 10,
                 "eval_every": 50},
    }
    run_dir: str = "runs/default"
    """Run directory (local path or fsspec URI such as s3://bucket/runs/x); reads RUN/base, writes RUN/sft."""
    base: str = ""
    """Model folder to fine-tune (HF format with its tokenizer, path or URI); empty means RUN_DIR/base."""
    input: list[str] = field(default_factory=list)
    """Conversation files (JSON or JSONL, .gz ok) in `format`, added to the built-in mixture."""
    format: str = "openai"
    """Format of `input` files: openai | sharegpt | hh | gsm8k | alpaca."""
    mixture: bool = True
    """Include the built-in identity + arithmetic conversations (`--no-mixture` trains on files only)."""
    identity_n: int = 200
    """Generated identity conversations in the mixture."""
    name: str = "Dia"
    """The assistant's name, taught by the identity conversations and the default system prompt."""
    maker: str = "the data2dialogue team"
    """Who made the assistant, as the identity conversations say it."""
    arith_n: int = 1000
    """Generated arithmetic conversations in the mixture (answers as `The answer is N.`)."""
    arith_ops: str = "+-*"
    """Arithmetic operations, from `+-*/`."""
    arith_lo: int = 0
    """Smallest arithmetic operand."""
    arith_hi: int = 99
    """Largest arithmetic operand."""
    system_prompt: str = ""
    """Default system prompt; empty means `You are NAME, a helpful assistant made by MAKER.`"""
    system_prompt_rate: float = 0.5
    """Share of conversations without a system message that get the default one (so both work)."""
    val_fraction: float = 0.05
    """Share of conversations held out (by content hash) for validation loss."""
    max_len: int = 512
    """Tokens per training row; longer conversations are cut (and counted)."""
    packing: bool = True
    """Pack several conversations per row (best fit) instead of one padded conversation per row."""
    epochs: int = 2
    """Passes over the training rows (sets max_steps when that is 0)."""
    max_steps: int = 0
    """Optimizer steps in total; 0: epochs x steps per epoch."""
    eval_batches: int = 0
    """Validation micro-batches per worker per evaluation; 0: the whole held-out split."""
    lr: float = 1e-4
    """Peak AdamW learning rate after warmup (smaller than pretraining's); cosine decay after."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices."""
    num_workers: int = 1
    """Ray Train workers (data-parallel)."""
    lora: bool = False
    """Train LoRA adapters (PEFT) on attention and MLP projections instead of all weights; merged into the saved model."""
    lora_r: int = 8
    """LoRA rank."""
    lora_alpha: int = 16
    """LoRA scaling alpha."""
    ray_num_cpus: int | None = None
    """CPUs of the embedded local Ray (none: the whole machine). Ignored with --address."""

    def __post_init__(self):
        from pipeline.chat.converters import CONVERTERS

        if self.format not in CONVERTERS:
            raise ValueError(f"format: {self.format!r} is not one of {', '.join(CONVERTERS)}")
        if not self.mixture and not self.input:
            raise ValueError("input: give at least one --input file when --no-mixture")
        for name in ("identity_n", "arith_n", "max_steps", "eval_batches"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("max_len", "epochs", "lora_r", "lora_alpha"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.system_prompt_rate <= 1:
            raise ValueError("system_prompt_rate: must be in [0, 1]")
        if not 0 < self.val_fraction < 0.5:
            raise ValueError("val_fraction: must be in (0, 0.5)")
        if not self.arith_ops or any(o not in "+-*/" for o in self.arith_ops):
            raise ValueError(f"arith_ops: {self.arith_ops!r} must use only + - * /")
        if self.arith_lo > self.arith_hi:
            raise ValueError("arith_lo: must be <= arith_hi")
        # 0 means "derived at run time" for these two; the loop's checks want a count.
        steps, evals = self.max_steps, self.eval_batches
        self.max_steps, self.eval_batches = steps or 1, evals or 1
        super().__post_init__()
        self.max_steps, self.eval_batches = steps, evals

    def default_system(self) -> str:
        return self.system_prompt or f"You are {self.name}, a helpful assistant made by {self.maker}."


# ---------------------------------------------------------------- data


def build_conversations(cfg: SFTConfig) -> tuple[list[dict], dict, list[dict]]:
    """The mixture plus files as `{"messages"}` rows; per-source counts; rejected rows."""
    from pipeline.chat.arithmetic import make_problems, to_messages
    from pipeline.chat.converters import load_conversations
    from pipeline.chat.identity import make_identity

    convs: list[dict] = []
    sources: dict[str, dict] = {}
    rejects: list[dict] = []
    if cfg.mixture:
        convs += make_identity(cfg.identity_n, cfg.seed, cfg.name, cfg.maker)
        problems = make_problems(cfg.arith_n, cfg.seed, cfg.arith_ops, cfg.arith_lo, cfg.arith_hi)
        convs += [{"messages": to_messages(p)} for p in problems]
        sources["identity"] = {"kept": cfg.identity_n}
        sources["arithmetic"] = {"kept": cfg.arith_n}
    for path in cfg.input:
        got, report = load_conversations(path, cfg.format)
        convs += got
        sources[path] = dict(report.counts)
        rejects += [{"source": path, **r} for r in report.rejects]
    if not convs:
        raise StageError(f"no usable conversations in {', '.join(cfg.input)} ({sources})")
    rng = random.Random(f"system-{cfg.seed}")
    system = cfg.default_system()
    for c in convs:
        if c["messages"][0]["role"] != "system" and rng.random() < cfg.system_prompt_rate:
            c["messages"] = [{"role": "system", "content": system}] + c["messages"]
    return convs, sources, rejects


def split_val(convs: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic split by a hash of the conversation's content (duplicates land together)."""
    train, val = [], []
    for c in convs:
        key = f"{seed}:" + json.dumps(c["messages"], sort_keys=True)
        h = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64
        (val if h < fraction else train).append(c)
    if not val and len(train) > 1:
        val.append(train.pop())
    return train, val


def prepare(cfg: SFTConfig, tok) -> dict:
    """Conversations → encoded train/val rows plus the data report (no Ray, no model)."""
    from pipeline.chat.encode import build_rows, encode_conversations

    convs, sources, rejects = build_conversations(cfg)
    train, val = split_val(convs, cfg.val_fraction, cfg.seed)
    enc_train, c_train = encode_conversations(tok, train, cfg.max_len)
    enc_val, c_val = encode_conversations(tok, val, cfg.max_len)
    if not enc_train:
        raise StageError(f"no trainable conversations after encoding ({dict(c_train)})")
    train_rows = build_rows(enc_train, cfg.max_len, cfg.packing, tok.pad_token_id)
    val_rows = build_rows(enc_val, cfg.max_len, False, tok.pad_token_id) if enc_val else None
    report = {
        "sources": sources,
        "conversations": {"train": len(train), "val": len(val)},
        "encoding_train": dict(c_train),
        "encoding_val": dict(c_val),
        "rows": {"train": int(len(train_rows["input_ids"])),
                 "val": int(len(val_rows["input_ids"])) if val_rows is not None else 0},
        "packing_efficiency": round(float(train_rows["attention_mask"].mean()), 4),
        "rejected": dict(Counter(r["reason"] for r in rejects)),
    }
    return {"train_rows": train_rows, "val_rows": val_rows, "val": val, "rejects": rejects, "report": report}


# ---------------------------------------------------------------- model, output, the stage


LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def load_model(base: str, lora: bool = False, r: int = 8, alpha: int = 16):
    """The loop's `model_fn`: the base weights, optionally wrapped with PEFT LoRA adapters."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.runfs import local_path

    model = AutoModelForCausalLM.from_pretrained(local_path(base), dtype=torch.float32)
    if not lora:
        return model
    from peft import LoraConfig, get_peft_model

    names = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    targets = [t for t in LORA_TARGETS if t in names]
    if not targets:
        raise StageError(f"lora: none of {', '.join(LORA_TARGETS)} in {base}; train without --lora")
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                                            task_type="CAUSAL_LM"))


def save_model(out_dir: str, tok_dir: str, model) -> None:
    """The loop's `finalize` (rank 0): adapters merged in, HF folder with tokenizer and chat template."""
    from pipeline.tokenizer import load_tokenizer
    from pipeline.train.model import save_chat_model

    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    save_chat_model(out_dir, model, load_tokenizer(tok_dir))


def base_dir(cfg: SFTConfig) -> str:
    from pipeline.runfs import RunDir

    return cfg.base or RunDir(cfg.run_dir).path("base")


def load_base_tokenizer(cfg: SFTConfig):
    """The base folder's tokenizer (`d2d pretrain` saves it beside the weights)."""
    from pipeline.runfs import RunDir
    from pipeline.tokenizer import load_tokenizer

    base = base_dir(cfg)
    if not RunDir(base).exists("config.json"):
        raise StageError(f"{base}/config.json not found: run `d2d pretrain --run-dir {cfg.run_dir}` first or set --base")
    return load_tokenizer(base)


def write_data(cfg: SFTConfig, data: dict) -> dict[str, str]:
    """Rows for the workers, val conversations for `d2d eval`, rejected rows set aside."""
    from pipeline.runfs import RunDir

    run = RunDir(cfg.run_dir)
    run.makedirs("sft/data")
    paths = {"train": save_rows(data["train_rows"], run.path("sft/data/train.npz"))}
    if data["val_rows"] is not None:
        paths["val"] = save_rows(data["val_rows"], run.path("sft/data/val.npz"))
    run.write_text("sft/val.jsonl", "".join(json.dumps(c, ensure_ascii=False) + "\n" for c in data["val"]))
    run.write_text("sft/rejects.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data["rejects"]))
    return paths


def chat_defaults(cfg: SFTConfig) -> dict:
    """What chat, eval and RL read from RUN/sft/sft.json."""
    return {"name": cfg.name, "maker": cfg.maker, "system_prompt": cfg.default_system(),
            "arithmetic": {"ops": cfg.arith_ops, "lo": cfg.arith_lo, "hi": cfg.arith_hi}}


def run(cfg: SFTConfig) -> dict:
    import dataclasses
    import time
    from functools import partial

    from pipeline.runfs import RunDir
    from pipeline.train.loop import fit
    from pipeline.train.plots import plot_metrics

    started = time.time()
    tok = load_base_tokenizer(cfg)
    context = RunDir(base_dir(cfg)).read_json("config.json").get("max_position_embeddings") or cfg.max_len
    if cfg.max_len > context:
        # RoPE saw positions up to the base's context only; longer rows would be extrapolation.
        print(f"[sft] max_len {cfg.max_len} > the base model's context {context}: using {context}", flush=True)
        cfg = dataclasses.replace(cfg, max_len=context)
    data = prepare(cfg, tok)
    paths = write_data(cfg, data)
    train = SFTBatches(paths["train"], cfg.batch_size, cfg.seed)
    val = SFTBatches(paths["val"], cfg.batch_size, cfg.seed, shuffle=False) if "val" in paths else None
    run_dir = RunDir(cfg.run_dir)
    out = run_dir.path("sft")
    steps = cfg.max_steps or cfg.epochs * math.ceil(train.steps_per_epoch(cfg.num_workers) / cfg.grad_accum)
    evals = cfg.eval_batches or (val.steps_per_epoch(cfg.num_workers) if val else 1)
    loop_cfg = dataclasses.replace(cfg, max_steps=steps, eval_batches=evals)
    base = base_dir(cfg)
    fit(loop_cfg, model_fn=partial(load_model, base, cfg.lora, cfg.lora_r, cfg.lora_alpha), train=train, val=val,
        loss_fn=sft_loss, finalize=partial(save_model, out, base), out_dir=out,
        storage_path=run_dir.path(".ray_train"), name="sft")
    rows = run_dir.read_jsonl("sft/metrics.jsonl")
    plots = plot_metrics(rows, out)
    vals = [r["val_loss"] for r in rows if "val_loss" in r]
    summary = {"steps": steps, "final_loss": rows[-1]["loss"] if rows else None,
               "final_val_loss": vals[-1] if vals else None, "seconds": round(time.time() - started, 1)}
    run_dir.write_json("sft/sft.json", {**chat_defaults(cfg), "data": data["report"], "train": summary,
                                        "config": dataclasses.asdict(cfg)})
    return {"artifacts": out, **summary, "plots": plots,
            "truncated": data["report"]["encoding_train"].get("truncated", 0),
            "rejected": sum(data["report"]["rejected"].values())}
