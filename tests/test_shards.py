"""pipeline.shards: `d2d tokenize` on a real local Ray, exact packing, the split, ShardReader local and remote."""

from __future__ import annotations

import json
import pickle

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.documents import doc_hash
from pipeline.runfs import RunDir
from pipeline.shards import ShardReader, ShardWriter, TokenizeConfig, run
from pipeline.tokenizer import EOT, encode_text, save_tokenizer, tiny_tokenizer

SEQ_LEN = 15
VAL = 0.2


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def docs():
    rng = np.random.default_rng(0)
    words = ["the", "quick", "fox", "\u00e9t\u00e9", "\U0001f600", "42", "<|endoftext|>", "<|im_start|>", "\n"]
    out = [(f"doc-{i}", " ".join(rng.choice(words, size=int(rng.integers(1, 40))))) for i in range(300)]
    return out + [("doc-null", None), ("doc-empty", "   ")]


@pytest.fixture(scope="module")
def tokenized(tmp_path_factory, tok, docs, _ray_session):
    root = tmp_path_factory.mktemp("shards")
    (root / "curated").mkdir()
    rows = {"id": [d for d, _ in docs], "text": [t for _, t in docs]}
    # Two files, so that Ray reads several blocks and the order across them matters.
    # part-0 has three row groups, so read pieces cut across row groups as well as files.
    pq.write_table(pa.table({k: v[:150] for k, v in rows.items()}), root / "curated" / "part-0.parquet",
                   row_group_size=50)
    pq.write_table(pa.table({k: v[150:] for k, v in rows.items()}), root / "curated" / "part-1.parquet")
    save_tokenizer(tok, str(root / "tokenizer"))
    cfg = TokenizeConfig(run_dir=str(root), seq_len=SEQ_LEN, val_fraction=VAL, shard_sequences=7, batch_size=16)
    result = run(cfg)
    return root, result, json.loads((root / "tokens" / "manifest.json").read_text())


def expected_stream(tok, docs, split):
    eot = tok.convert_tokens_to_ids(EOT)
    out = []
    for doc_id, text in docs:
        if text and text.strip() and (doc_hash(doc_id, "split") < VAL) == (split == "val"):
            out += encode_text(tok, text) + [eot]
    return np.array(out)


@pytest.mark.parametrize("split", ["train", "val"])
def test_packing_loses_and_duplicates_nothing(tok, docs, tokenized, split):
    root, _, manifest = tokenized
    info = manifest["splits"][split]
    width = SEQ_LEN + 1
    rows = [np.load(root / "tokens" / name) for name in info["shards"]]
    assert all(r.dtype == np.uint16 and r.shape[1] == width for r in rows)
    assert [len(r) for r in rows] == info["shard_sequences"]
    assert all(n == 7 for n in info["shard_sequences"][:-1])
    stored = np.concatenate(rows).reshape(-1)
    expected = expected_stream(tok, docs, split)
    # The stored stream is the document stream, in order, minus a tail shorter than one row.
    assert len(expected) - len(stored) == info["dropped_tail_tokens"] < width
    assert np.array_equal(stored, expected[: len(stored)])
    assert info["tokens"] == len(stored) == info["sequences"] * width
    assert info["document_tokens"] == len(expected)
    # Document boundaries: EOT appears exactly once per document, never from content.
    n_docs = sum(1 for d, t in docs if t and t.strip() and (doc_hash(d, "split") < VAL) == (split == "val"))
    assert info["documents"] == n_docs == int((expected == manifest["eot_id"]).sum())


def test_read_pieces_do_not_change_the_shards(tokenized, run_dir):
    """Whole-file pieces (min_blocks=1) and row-group slices (the default) write identical shards."""
    root, _, manifest = tokenized
    cfg = TokenizeConfig(run_dir=str(run_dir), input=str(root / "curated"), tokenizer=str(root / "tokenizer"),
                         seq_len=SEQ_LEN, val_fraction=VAL, shard_sequences=7, batch_size=16, min_blocks=1)
    run(cfg)
    other = json.loads((run_dir / "tokens" / "manifest.json").read_text())
    assert other["splits"] == manifest["splits"]
    for split, info in manifest["splits"].items():
        for name in info["shards"]:
            assert np.array_equal(np.load(run_dir / "tokens" / name), np.load(root / "tokens" / name)), (split, name)


def test_manifest_and_bad_input_counted(tok, docs, tokenized):
    root, result, manifest = tokenized
    assert manifest["vocab_size"] == len(tok) and manifest["seq_len"] == SEQ_LEN and manifest["dtype"] == "uint16"
    blank = [d for d, t in docs if not (t and t.strip())]
    assert {"doc-null", "doc-empty"} <= set(blank)
    assert manifest["skipped_documents"] == {"empty_or_missing_text": len(blank)}
    assert (root / "tokens" / "skipped.txt").read_text().split() == blank
    assert result["documents"] == {s: manifest["splits"][s]["documents"] for s in ("train", "val")}
    assert sorted(p.name for p in (root / "tokens").glob("*.npy")) == sorted(
        manifest["splits"]["train"]["shards"] + manifest["splits"]["val"]["shards"])


def test_reader_local_remote_and_pickled(tokenized):
    root, _, manifest = tokenized
    local = ShardReader(str(root / "tokens"), "train")
    n = local.num_sequences
    assert n == manifest["splits"]["train"]["sequences"] and local.seq_len == SEQ_LEN
    everything = np.concatenate([np.load(root / "tokens" / s) for s in manifest["splits"]["train"]["shards"]])
    idx = np.array([n - 1, 0, 7, 6, 3, 3])
    got = local.read(idx)
    assert got.dtype == np.int64 and np.array_equal(got, everything[idx])
    assert np.array_equal(pickle.loads(pickle.dumps(local)).read(idx), got)
    # Any fsspec URI (s3:// in production) is read by byte ranges, not whole files.
    mem = fsspec.filesystem("memory")
    for p in (root / "tokens").iterdir():
        mem.pipe(f"/d2d-test/tokens/{p.name}", p.read_bytes())
    remote = ShardReader("memory://d2d-test/tokens", "train")
    assert np.array_equal(remote.read(idx), got)
    with pytest.raises(IndexError):
        local.read([n])
    with pytest.raises(ValueError, match="split"):
        ShardReader(str(root / "tokens"), "test")


def test_writer_packs_across_calls(tmp_path):
    run = RunDir(tmp_path)
    run.makedirs("tokens")
    w = ShardWriter(run, "train", seq_len=3, shard_sequences=2, dtype=np.dtype(np.uint32))
    stream = np.arange(23, dtype=np.uint32)
    for chunk in np.split(stream, [1, 2, 9, 17]):
        w.add(chunk, documents=1)
    info = w.finish()
    assert info["shard_sequences"] == [2, 2, 1] and info["dropped_tail_tokens"] == 3 and info["documents"] == 5
    stored = np.concatenate([np.load(tmp_path / "tokens" / s) for s in info["shards"]]).reshape(-1)
    assert np.array_equal(stored, stream[:20])


@pytest.mark.parametrize("field,value", [("seq_len", 0), ("val_fraction", 1.0), ("min_blocks", 0), ("cpus_per_task", 0)])
def test_config_validation_names_field(field, value):
    with pytest.raises(ValueError, match=field):
        TokenizeConfig(**{field: value})
