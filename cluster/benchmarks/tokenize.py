"""`d2d bench tokenize`: tokens/s of `d2d tokenize` (Ray Data) vs HF tokenizers' batch encoding.

    d2d bench tokenize --run-dir bench

Both encode the same documents with the same tokenizer on the same machine in one
run; the reference is `encode_batch_fast` of the Rust tokenizer in this process (all cores),
the call the stage itself makes (no character offsets).
The figure of merit is Ray's overhead: 1 - d2d_tokens_per_s / hf_tokens_per_s (target < 20%).
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq


def _documents(n: int) -> list[str]:
    from pipeline.acquire.demotext import english_article

    rng = random.Random(0)
    docs = []
    for _ in range(n):
        title, paragraphs, _topic = english_article(rng)
        docs.append(title + "\n\n" + "\n\n".join(paragraphs))
    return docs


def run_bench(out_dir: str, quick: bool) -> dict:
    from pipeline.shards import TokenizeConfig, run
    from pipeline.tokenizer import safe_backend, save_tokenizer, train_tokenizer

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    docs = _documents(400 if quick else 4000)
    chars = sum(len(d) for d in docs)
    tok = train_tokenizer(docs[:200], vocab_size=4096)
    save_tokenizer(tok, str(out / "tokenizer"))
    pq.write_table(pa.table({"id": [str(i) for i in range(len(docs))], "text": docs}), out / "docs.parquet")

    backend = safe_backend(tok)
    t = time.perf_counter()
    ref_tokens = sum(len(e.ids) + 1 for e in backend.encode_batch_fast(docs, add_special_tokens=False))
    ref_s = time.perf_counter() - t

    cfg = TokenizeConfig(run_dir=str(out / "run"), input=str(out / "docs.parquet"),
                         tokenizer=str(out / "tokenizer"), seq_len=256, val_fraction=0.01)
    run(cfg)  # warm-up: actor start-up and Ray Data planning are paid once per job
    t = time.perf_counter()
    result = run(cfg)
    d2d_s = time.perf_counter() - t
    cores = os.cpu_count() or 1
    hf_tps, d2d_tps = ref_tokens / ref_s, ref_tokens / d2d_s
    return {
        "reference": "HF tokenizers encode_batch_fast, same docs and tokenizer, in-process",
        "documents": len(docs), "characters": chars, "tokens": ref_tokens,
        "hf_tokens_per_s_per_core": round(hf_tps / cores),
        "d2d_tokens_per_s_per_core": round(d2d_tps / cores),
        "ray_overhead": round(1 - d2d_tps / hf_tps, 3),
        "shards_written": bool(result),
    }
