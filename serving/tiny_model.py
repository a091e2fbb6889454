"""A tiny random Llama chat model folder, built offline, for serving tests and `d2d bench serve`.

    python -m serving.tiny_model /tmp/tiny-chat        # writes an HF folder

The tokenizer is the project's own throwaway one (`pipeline.tokenizer.tiny_tokenizer`,
ChatML chat template). Weights are random: replies are gibberish, but every serving
path (chat template, KV cache, sampling, stop strings, EOS) runs as with a trained model.
"""

from __future__ import annotations

import sys


def build_tiny_model(path: str, hidden: int = 64, layers: int = 2, heads: int = 4,
                     context: int = 512, seed: int = 0) -> str:
    """Save a random LlamaForCausalLM + chat tokenizer into `path`; return `path`."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from pipeline.tokenizer import tiny_tokenizer

    tok = tiny_tokenizer()
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 4,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=context, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


if __name__ == "__main__":
    print(build_tiny_model(sys.argv[1] if len(sys.argv) > 1 else "tiny-chat"))
