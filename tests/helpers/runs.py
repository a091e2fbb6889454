"""Run directories built for tests without running the stages that normally make them."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np

from pipeline.runfs import RunDir

SEQ_LEN = 32


def write_tiny_run(run_dir: Path, seq_len: int = SEQ_LEN, docs: int = 600) -> dict:
    """A tokenizer and token shards in the tokenize stage's format, from repetitive sentences."""
    from pipeline.shards import ShardWriter, token_dtype
    from pipeline.tokenizer import EOT, PAD, encode_texts, save_tokenizer, tiny_tokenizer

    run = RunDir(run_dir)
    tok = tiny_tokenizer()
    save_tokenizer(tok, run.path("tokenizer"))
    rng = random.Random(0)
    words = "the cat sat on a mat and the dog ran to the red ball".split()
    texts = [" ".join(words[i:] + words[:i]) for i in (rng.randrange(len(words)) for _ in range(docs))]
    eot, dtype = tok.convert_tokens_to_ids(EOT), token_dtype(len(tok))
    run.makedirs("tokens")
    splits = {}
    for split, part in (("train", texts[: docs * 9 // 10]), ("val", texts[docs * 9 // 10:])):
        writer = ShardWriter(run, split, seq_len, 64, dtype)
        writer.add(np.concatenate([np.array(ids + [eot]) for ids in encode_texts(tok, part)]), len(part))
        splits[split] = writer.finish()
    manifest = {"vocab_size": len(tok), "seq_len": seq_len, "dtype": dtype.name, "eot_id": eot,
                "pad_id": tok.convert_tokens_to_ids(PAD), "splits": splits, "tokenizer": run.path("tokenizer")}
    run.write_json("tokens/manifest.json", manifest)
    return manifest


def failing_tiny_recipe(path) -> str:
    """The tiny recipe whose pretraining loses rank 1 at step 15 (checkpoints every 10)."""
    import yaml

    recipe = yaml.safe_load((Path(__file__).resolve().parents[2] / "cluster/recipes/tiny.yaml").read_text())
    recipe["stages"]["pretrain"].update(fail_at_step=15, fail_rank=1)
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)
