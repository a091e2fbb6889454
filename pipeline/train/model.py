"""The base model: a Llama-style decoder (RoPE, RMSNorm, SwiGLU, causal attention) from `LlamaConfig`.

    python -m pipeline.train.model          # prints every preset's parameter count and FLOPs/token

Presets run from a CPU-minutes `tiny` to a ~1B model for GPUs. The model is a plain
`transformers.LlamaForCausalLM`, so `save_pretrained` folders load with
`AutoModelForCausalLM` and any Hugging Face tool. Nothing distributed lives here:
DDP/FSDP/compile are applied by `pipeline.train.loop`.
"""

from __future__ import annotations

#: Architecture presets (LlamaConfig fields). Vocabulary and context come from the data.
MODEL_PRESETS: dict[str, dict] = {
    # 2 layers, width 64: trains in seconds on one CPU core (tests, the demo recipe).
    "tiny": {"hidden_size": 64, "intermediate_size": 176, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 4},
    # ~25M non-embedding parameters: minutes to an hour on CPU, seconds per 1k steps on a GPU.
    "small": {"hidden_size": 512, "intermediate_size": 1376, "num_hidden_layers": 8,
              "num_attention_heads": 8, "num_key_value_heads": 8},
    # GPT-2 small's shape (124M with a 50k vocabulary).
    "gpt2": {"hidden_size": 768, "intermediate_size": 2048, "num_hidden_layers": 12,
             "num_attention_heads": 12, "num_key_value_heads": 12},
    # Llama-3.2-1B's shape (grouped-query attention): GPUs, FSDP across several.
    "1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
           "num_attention_heads": 32, "num_key_value_heads": 8, "rope_theta": 500000.0},
}


def llama_config(preset: str, *, vocab_size: int, seq_len: int, tie_embeddings: bool = True,
                 eos_token_id: int | None = None, pad_token_id: int | None = None, **overrides):
    """A `LlamaConfig` for `preset` with the data's vocabulary and context, plus field overrides."""
    from transformers import LlamaConfig

    if preset not in MODEL_PRESETS:
        raise ValueError(f"model: {preset!r} is not one of {', '.join(MODEL_PRESETS)}")
    fields = {**MODEL_PRESETS[preset], **overrides}
    return LlamaConfig(vocab_size=vocab_size, max_position_embeddings=seq_len,
                       tie_word_embeddings=tie_embeddings, eos_token_id=eos_token_id,
                       bos_token_id=eos_token_id, pad_token_id=pad_token_id,
                       attention_bias=False, mlp_bias=False, **fields)


def build_model(config, seed: int = 0):
    """A freshly initialised `LlamaForCausalLM` (weights from the config's init scheme, seeded)."""
    import torch
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def param_count(config, *, non_embedding: bool = False) -> int:
    """Parameters of a Llama model with this config, computed from the shapes (no model built)."""
    h, f, n = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    hd = getattr(config, "head_dim", None) or h // config.num_attention_heads
    q, kv = config.num_attention_heads * hd, config.num_key_value_heads * hd
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * f + 2 * h  # attention, SwiGLU, two RMSNorms
    body = n * per_layer + h  # + final norm
    if non_embedding:
        return body
    emb = config.vocab_size * h
    return body + emb + (0 if config.tie_word_embeddings else emb)


def flops_per_token(config, seq_len: int) -> int:
    """Training FLOPs per token: 6·N (forward + backward matmuls) + 12·L·H·T attention (PaLM appendix B)."""
    n = param_count(config, non_embedding=True) + config.vocab_size * config.hidden_size  # lm_head matmul
    return 6 * n + 12 * config.num_hidden_layers * config.hidden_size * seq_len


#: Dense bf16 peak FLOP/s by GPU name (vendor datasheets, no sparsity), for MFU.
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12,
                   "A10G": 70e12, "A10": 125e12, "V100": 125e12, "T4": 65e12}


def peak_flops(device_name: str) -> float | None:
    """The datasheet bf16 peak of a GPU from its CUDA name ("NVIDIA H100 80GB HBM3"), else None."""
    words = device_name.upper().replace("-", " ").split()
    # Longest names first, so "A10G" is not read as "A10", nor "L40S" as "L4".
    for name in sorted(PEAK_BF16_FLOPS, key=len, reverse=True):
        if name in words:
            return PEAK_BF16_FLOPS[name]
    return None


def mfu(config, seq_len: int, tokens_per_s: float, peak: float) -> float:
    """Model FLOPs utilisation: achieved training FLOP/s (FLOPs/token x tokens/s) over the peak."""
    return flops_per_token(config, seq_len) * tokens_per_s / peak


def describe(config, seq_len: int) -> dict:
    return {"parameters": param_count(config),
            "non_embedding_parameters": param_count(config, non_embedding=True),
            "flops_per_token": flops_per_token(config, seq_len)}


if __name__ == "__main__":
    for name in MODEL_PRESETS:
        cfg = llama_config(name, vocab_size=8192, seq_len=1024)
        d = describe(cfg, 1024)
        print(f"{name:<6} params {d['parameters'] / 1e6:8.1f}M  "
              f"non-embedding {d['non_embedding_parameters'] / 1e6:8.1f}M  FLOPs/token {d['flops_per_token']:.3e}")


def save_chat_model(out: str, model, tok) -> str:
    """Save an HF folder (path or URI) whose generation_config stops at `<|im_end|>` as well as
    `<|endoftext|>`: plain `model.generate` (and any HF tool) then ends a chat turn where the
    assistant does, instead of running on into a made-up next turn."""
    from pipeline.runfs import RunDir
    from pipeline.tokenizer import stop_token_ids

    gc = getattr(model, "generation_config", None)
    if gc is not None and model.can_generate():
        gc.eos_token_id = stop_token_ids(tok)
        gc.pad_token_id = tok.pad_token_id
    return RunDir(out).save_pretrained("", model, tok)
