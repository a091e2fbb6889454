"""`d2d eval`: how much of an assistant a chat model folder is: val loss, stop rate, arithmetic accuracy.

    d2d eval --model runs/demo/sft          # writes runs/demo/sft/eval.json

- `val_loss`: mean cross-entropy per assistant token (incl. `<|im_end|>`) on the
  held-out conversations `d2d sft` wrote to MODEL/val.jsonl (else a generated set).
- `stop_rate`: share of sampled replies that end with `<|im_end|>` within
  `max_new_tokens` (a base model rambles on; an assistant stops).
- `arithmetic_accuracy`: exact match of the parsed answer, greedy decoding, on
  `heldout_problems` with the operations and range the model was tuned on
  (read from MODEL/sft.json), the same set the RL stage measures.

The evaluation runs as one Ray task with the CPUs/GPUs from config.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import ClassVar

from pipeline.errors import StageError


@dataclass(kw_only=True)
class EvalConfig:
    model: str = ""
    """Model folder to evaluate (HF format with tokenizer); empty means RUN_DIR/sft."""
    run_dir: str = "runs/default"
    """Run directory, used when `model` is empty."""
    val_file: str = ""
    """Conversations JSONL (`{"messages": [...]}`) for val_loss; empty: MODEL/val.jsonl, else generated."""
    max_len: int = 512
    """Conversations are cut at this many tokens for val_loss."""
    stop_prompts: int = 64
    """Prompts sampled for stop_rate."""
    max_new_tokens: int = 64
    """Token budget for a reply: a reply that has not ended with <|im_end|> by then did not stop."""
    temperature: float = 1.0
    """Sampling temperature for stop_rate (arithmetic is greedy)."""
    arith_n: int = 50
    """Held-out arithmetic problems (fewer if the range has fewer held-out problems)."""
    arith_ops: str = ""
    """Operations for held-out problems; empty: as in MODEL/sft.json, else `+-*`."""
    arith_lo: int | None = None
    """Smallest operand; none: as in MODEL/sft.json, else 0."""
    arith_hi: int | None = None
    """Largest operand; none: as in MODEL/sft.json, else 99."""
    system_prompt: str | None = None
    """System prompt for sampled prompts; none: the model's default from sft.json; empty: no system message."""
    batch_size: int = 32
    """Sequences per forward pass."""
    seed: int = 0
    """Seed for sampling and for the held-out problem order."""
    num_cpus: float = 1.0
    """CPUs of the Ray task that evaluates (also its torch threads)."""
    num_gpus: float = 0.0
    """GPUs of the Ray task (uses CUDA when > 0 and available)."""
    ray_num_cpus: int | None = None
    """CPUs of the embedded local Ray (none: the whole machine). Ignored with --address."""

    presets: ClassVar[dict[str, dict]] = {"tiny": {"stop_prompts": 32, "arith_n": 40}}

    def __post_init__(self):
        for name in ("max_len", "stop_prompts", "max_new_tokens", "arith_n", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError("temperature: must be > 0 (stop_rate samples replies)")
        if self.num_cpus <= 0 or self.num_gpus < 0:
            raise ValueError("num_cpus/num_gpus: num_cpus must be > 0 and num_gpus >= 0")

    def model_dir(self) -> str:
        from pipeline.runfs import RunDir

        return self.model or RunDir(self.run_dir).path("sft")


def _batches(xs: list, n: int):
    for i in range(0, len(xs), n):
        yield xs[i : i + n]


def rows_loss(model, rows: dict | None, batch_size: int, device="cpu") -> tuple[float, int]:
    """Mean CE per labelled token over training-shaped rows (`build_rows`) and the token count."""
    import torch
    import torch.nn.functional as F

    from pipeline.chat.encode import forward_rows

    if rows is None or not len(rows["input_ids"]):
        return float("nan"), 0
    total, count = 0.0, 0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows["input_ids"]), batch_size):
            part = {k: torch.from_numpy(v[i : i + batch_size]).to(device) for k, v in rows.items()}
            width = int(part["attention_mask"].sum(1).max())  # rows are right-padded: skip the pad tail
            logits = forward_rows(model, part["input_ids"][:, :width], part["position_ids"][:, :width]).logits
            target = part["labels"][:, :width]  # already shifted (encode.build_rows)
            total += float(F.cross_entropy(logits.float().flatten(0, 1), target.flatten(),
                                           ignore_index=-100, reduction="sum"))
            count += int((target != -100).sum())
    model.train(was_training)
    return total / max(count, 1), count


def val_loss(model, tok, convs: list[dict], max_len: int, batch_size: int) -> tuple[float, int]:
    """Mean CE per assistant token over `convs` and the number of such tokens."""
    from pipeline.chat.encode import build_rows, encode_conversations

    enc, _ = encode_conversations(tok, convs, max_len)
    if not enc:
        return float("nan"), 0
    rows = build_rows(enc, max_len, packing=False, pad_id=tok.pad_token_id)
    return rows_loss(model, rows, batch_size, next(model.parameters()).device)


def stop_rate(model, tok, prompts: list[list[dict]], max_new_tokens: int, temperature: float,
              seed: int, batch_size: int) -> tuple[float, list[str], float]:
    """Share of sampled replies ending with <|im_end|>; the replies; their mean length in tokens."""
    import torch

    from pipeline.tokenizer import IM_END, render_chat, stop_token_ids
    from pipeline.train.rollout import decode_responses, sample

    im_end = tok.convert_tokens_to_ids(IM_END)
    gen = torch.Generator().manual_seed(seed)
    stopped, replies, lengths = 0, [], []
    for chunk in _batches(prompts, batch_size):
        ids = [render_chat(tok, m, add_generation_prompt=True) for m in chunk]
        ro = sample(model, ids, max_new_tokens=max_new_tokens, eos_ids=stop_token_ids(tok),
                    pad_id=tok.pad_token_id, temperature=temperature, generator=gen)
        for r in ro.responses:
            stopped += bool(r) and r[-1] == im_end
            lengths.append(len(r))
        replies += decode_responses(tok, ro.responses)
    return stopped / max(len(prompts), 1), replies, sum(lengths) / max(len(lengths), 1)


def arithmetic_accuracy(model, tok, problems: list[dict], system: str, batch_size: int,
                        max_new_tokens: int = 24) -> tuple[float, list[str]]:
    """Exact-match accuracy of greedy replies parsed with `parse_answer`."""
    from pipeline.chat.arithmetic import parse_answer, prompt_messages
    from pipeline.train.rollout import generate_replies

    prompts = [prompt_messages(p, system or None) for p in problems]
    replies = generate_replies(model, tok, prompts, max_new_tokens=max_new_tokens, temperature=0.0,
                               batch_size=batch_size)
    right = sum(parse_answer(r) == p["answer"] for r, p in zip(replies, problems, strict=False))
    return right / max(len(problems), 1), replies


def _model_defaults(path: str) -> dict:
    from pipeline.runfs import RunDir

    model = RunDir(path)
    return model.read_json("sft.json") if model.exists("sft.json") else {}


def _heldout(n: int, seed: int, ops: str, lo: int, hi: int) -> list[dict]:
    """Up to `n` held-out problems: a small range has fewer, so it gives all it has."""
    import random

    from pipeline.chat.arithmetic import heldout_pool, heldout_problems

    try:
        return heldout_problems(n, seed, ops, lo, hi)
    except ValueError:
        pool = heldout_pool(ops, lo, hi)
        random.Random(seed).shuffle(pool)
        return pool[:n]


def _val_conversations(cfg: EvalConfig, path: str, defaults: dict) -> tuple[list[dict], str]:
    from pipeline.chat.converters import load_conversations
    from pipeline.runfs import RunDir

    source = cfg.val_file or (RunDir(path).path("val.jsonl") if RunDir(path).exists("val.jsonl") else "")
    if source:
        convs, report = load_conversations(source, "openai")
        if not convs:
            raise StageError(f"{source}: no usable conversations ({dict(report.counts)})")
        return convs, source
    from pipeline.chat.arithmetic import to_messages
    from pipeline.chat.identity import make_identity

    name, maker = defaults.get("name", "Dia"), defaults.get("maker", "the data2dialogue team")
    convs = make_identity(32, cfg.seed + 1, name, maker)
    convs += [{"messages": to_messages(p)} for p in _heldout(32, cfg.seed + 1, "+-*", 0, 99)]
    return convs, "generated (identity + held-out arithmetic)"


def evaluate(cfg: EvalConfig) -> dict:
    """Load the model and compute every figure (runs inside the Ray task)."""
    import torch
    from transformers import AutoModelForCausalLM

    from pipeline.runfs import local_path
    from pipeline.tokenizer import load_tokenizer

    torch.set_num_threads(max(1, int(cfg.num_cpus)))
    torch.manual_seed(cfg.seed)
    path = cfg.model_dir()
    device = "cuda" if cfg.num_gpus > 0 and torch.cuda.is_available() else "cpu"
    tok = load_tokenizer(local_path(path))
    model = AutoModelForCausalLM.from_pretrained(local_path(path), dtype=torch.float32).to(device).eval()
    defaults = _model_defaults(path)
    system = cfg.system_prompt if cfg.system_prompt is not None else defaults.get("system_prompt", "")
    arith = defaults.get("arithmetic", {})
    ops = cfg.arith_ops or arith.get("ops", "+-*")
    lo = cfg.arith_lo if cfg.arith_lo is not None else arith.get("lo", 0)
    hi = cfg.arith_hi if cfg.arith_hi is not None else arith.get("hi", 99)
    started = time.time()

    convs, val_source = _val_conversations(cfg, path, defaults)
    loss, n_tokens = val_loss(model, tok, convs, cfg.max_len, cfg.batch_size)
    # Stop-rate prompts: the val conversations up to their first assistant turn.
    prompts = []
    for c in convs[: cfg.stop_prompts]:
        msgs = c["messages"]
        first = next(i for i, m in enumerate(msgs) if m["role"] == "assistant")
        head = msgs[:first]
        if system and head[0]["role"] != "system":
            head = [{"role": "system", "content": system}] + head
        prompts.append(head)
    rate, replies, mean_len = stop_rate(model, tok, prompts, cfg.max_new_tokens, cfg.temperature,
                                        cfg.seed, cfg.batch_size)
    problems = _heldout(cfg.arith_n, cfg.seed, ops, lo, hi)
    acc, answers = arithmetic_accuracy(model, tok, problems, system, cfg.batch_size)
    return {
        "model": path,
        "val_loss": round(loss, 4),
        "val_assistant_tokens": n_tokens,
        "val_conversations": len(convs),
        "val_source": val_source,
        "stop_rate": round(rate, 4),
        "stop_prompts": len(prompts),
        "max_new_tokens": cfg.max_new_tokens,
        "mean_reply_tokens": round(mean_len, 1),
        "arithmetic_accuracy": round(acc, 4),
        "arithmetic_problems": len(problems),
        "arithmetic": {"ops": ops, "lo": lo, "hi": hi, "seed": cfg.seed},
        "system_prompt": system,
        "examples": [{"prompt": p[-1]["content"], "reply": r} for p, r in zip(prompts[:4], replies[:4], strict=False)]
        + [{"prompt": q["question"], "reply": a, "answer": q["answer"]} for q, a in zip(problems[:4], answers[:4], strict=False)],
        "seconds": round(time.time() - started, 1),
        "config": asdict(cfg),
    }


def run(cfg: EvalConfig) -> dict:
    import ray

    from pipeline.runfs import RunDir

    path = cfg.model_dir()
    if not RunDir(path).exists("config.json"):
        raise StageError(f"{path}/config.json not found: run `d2d sft --run-dir {cfg.run_dir}` first or pass --model")
    task = ray.remote(num_cpus=cfg.num_cpus, num_gpus=cfg.num_gpus)(evaluate)
    result = ray.get(task.remote(cfg))
    out = RunDir(path).write_json("eval.json", result)
    return {"artifacts": out, **{k: result[k] for k in ("val_loss", "stop_rate", "arithmetic_accuracy")}}
