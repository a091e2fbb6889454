"""`d2d generate`: stream a continuation of a prompt from a model folder to the terminal.

    d2d generate --model runs/demo/base --prompt "First Citizen:" --max-tokens 100 --temperature 0.8

Plain text continuation (a base model has no chat format; `d2d chat` is for assistants).
The project's one sampler (`pipeline.engine`, KV cache): text prints as it is
sampled. Runs in this process, no Ray.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from pipeline.errors import StageError


@dataclass(kw_only=True)
class GenerateConfig:
    model: str = ""
    """Model folder (HF format with tokenizer), e.g. RUN/base; empty: RUN_DIR/base."""
    run_dir: str = "runs/default"
    """Run directory, used when `model` is empty."""
    prompt: str = ""
    """Text to continue (empty: start from <|endoftext|>, i.e. a fresh document)."""
    max_tokens: int = 64
    """New tokens to sample (fewer if the context would overflow)."""
    temperature: float = 0.8
    """Sampling temperature; 0 means greedy."""
    top_k: int = 50
    """Sample among the k most likely tokens (0: no cut)."""
    top_p: float = 1.0
    """Nucleus sampling: the smallest set of tokens with this much probability (1: no cut)."""
    seed: int = 0
    """Sampling seed (same seed, same text)."""
    stream: bool = True
    """Print tokens as they come; false prints the whole text at the end."""

    def __post_init__(self):
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature: must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k: must be >= 0, got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p: must be in (0, 1], got {self.top_p}")


def generate(cfg: GenerateConfig, out=None) -> str:
    """Sample a continuation of cfg.prompt; writes it to `out` (default stdout) as it comes; returns it."""
    import os

    from pipeline.engine import Engine, Sampling
    from pipeline.tokenizer import EOT, encode_text

    out = out or sys.stdout  # looked up per call: sys.stdout may have been replaced since import
    model_dir = cfg.model or f"{cfg.run_dir.rstrip('/')}/base"
    if not os.path.exists(os.path.join(model_dir, "config.json")):
        raise StageError(f"{model_dir}/config.json not found: run `d2d pretrain` first or pass --model")
    engine = Engine.load(model_dir)
    eot = engine.tok.convert_tokens_to_ids(EOT)
    engine.eos_ids = {eot}  # a base model's text ends at the document separator only
    ids = encode_text(engine.tok, cfg.prompt) if cfg.prompt else [eot]
    if len(ids) >= engine.context_length:
        raise StageError(f"prompt: {len(ids)} tokens leave no room in the model's {engine.context_length}-token context")
    s = Sampling(max_tokens=cfg.max_tokens, temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                 seed=cfg.seed)
    pieces = []
    if cfg.stream:
        out.write(cfg.prompt)
    for piece in engine.stream(ids, s):
        pieces.append(piece)
        if cfg.stream:
            out.write(piece)
            out.flush()
    text = "".join(pieces)
    out.write(("" if cfg.stream else cfg.prompt + text) + "\n")
    return text


def run(cfg: GenerateConfig) -> None:
    generate(cfg)
