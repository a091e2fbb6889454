"""Token shards: curated text -> packed fixed-length sequences on Ray Data, and their reader.

    d2d tokenize --run-dir runs/demo [--input ../shared/data/text/tinyshakespeare.txt]

Documents (RUN/curated/*.parquet `text`, or --input .txt/.parquet) are encoded in the
Ray Data read tasks themselves (special-token text stays plain text), each followed by
`<|endoftext|>`; the stream is packed into rows of seq_len+1 tokens and written as

    RUN/tokens/{split}-{NNNNN}.npy   (n_seqs, seq_len+1), uint16 if vocab <= 65535 else uint32
    RUN/tokens/manifest.json         vocab_size, seq_len, dtype, eot_id, per-split shards and exact counts

A document goes to `val` when the hash of its id falls below val_fraction, so the
split never changes between runs. Blocks arrive in order (preserve_order), so the
shards are byte-for-byte reproducible. `ShardReader` reads rows from a memory map
(local) or by byte ranges (s3:// and any fsspec URI) without loading a shard whole.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from pipeline.documents import doc_hash, input_files, iter_documents
from pipeline.errors import StageError
from pipeline.runfs import RunDir, is_remote
from pipeline.tokenizer import EOT, PAD

SPLITS = ("train", "val")


@dataclass(kw_only=True)
class TokenizeConfig:
    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"seq_len": 256, "val_fraction": 0.05, "shard_sequences": 1024},
        "base": {"seq_len": 2048, "val_fraction": 0.005, "shard_sequences": 8192},
    }
    run_dir: str = "runs/default"
    """Run directory (local path or s3:// URI); shards go to RUN/tokens/."""
    input: str | None = None
    """A .txt/.parquet file, folder or glob to tokenize; default RUN/curated/*.parquet."""
    tokenizer: str | None = None
    """Tokenizer folder or URI; default RUN/tokenizer (made by `d2d tokenizer`)."""
    seq_len: int = 1024
    """Training context length; each stored row holds seq_len+1 tokens (inputs and shifted targets)."""
    val_fraction: float = 0.01
    """Fraction of documents, chosen by a hash of the document id, that go to the val split."""
    shard_sequences: int = 4096
    """Rows per shard file (the last shard of a split may hold fewer)."""
    batch_size: int = 1024
    """Documents per encode call (the Rust tokenizer spreads one call over the task's threads)."""
    cpus_per_task: float = 1.0
    """CPUs Ray reserves per read-and-encode task; cluster CPUs / this = tasks in flight."""
    min_blocks: int = 8
    """Split the input into at least this many blocks, so a single small file still keeps
    every CPU busy; large inputs use Ray Data's own block sizing."""
    text_split: Literal["paragraph", "line", "file"] = "paragraph"
    """How a .txt input splits into documents: blank-line paragraphs, lines, or one per file."""
    text_column: str = "text"
    """Parquet column holding document text."""
    id_column: str = "id"
    """Parquet column with a stable document id; without one, the text's hash decides the split."""

    def __post_init__(self):
        if self.seq_len < 1:
            raise ValueError(f"seq_len: must be >= 1, got {self.seq_len}")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError(f"val_fraction: must be in [0, 1), got {self.val_fraction}")
        for name in ("shard_sequences", "batch_size", "min_blocks"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if self.cpus_per_task <= 0:
            raise ValueError(f"cpus_per_task: must be > 0, got {self.cpus_per_task}")


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65535 else np.uint32)


_BACKENDS: dict[str, tuple] = {}  # per worker process: tokenizer path -> (backend, eot id)


def tokenize_batch(batch, *, tokenizer_path: str, val_fraction: float, text_column: str = "text",
                   id_column: str | None = "id"):
    """A batch of documents -> id, split, skip reason, token ids (+EOT) per document.

    A plain function, so Ray Data fuses it into the read tasks (one operator, no actor pool);
    the tokenizer is loaded once per worker process and reused by every later task there.
    Without an id column the text's hash decides the split (duplicates land together).
    """
    import pyarrow as pa

    if tokenizer_path not in _BACKENDS:
        from pipeline.tokenizer import load_safe_backend

        backend = load_safe_backend(tokenizer_path)
        _BACKENDS[tokenizer_path] = (backend, backend.token_to_id(EOT))
    backend, eot = _BACKENDS[tokenizer_path]
    texts = batch.column(text_column).cast(pa.string()).to_pylist()
    if id_column and id_column in batch.column_names:
        ids = batch.column(id_column).cast(pa.string()).to_pylist()
    else:
        ids = [f"sha:{doc_hash(t or '')}" for t in texts]
    good = [i for i, t in enumerate(texts) if isinstance(t, str) and t.strip()]
    encs = backend.encode_batch_fast([texts[i] for i in good], add_special_tokens=False)
    lengths = np.zeros(len(texts), dtype=np.int64)
    lengths[good] = [len(e.ids) + 1 for e in encs]
    ends = np.cumsum(lengths)
    flat = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.uint32)
    for i, e in zip(good, encs, strict=True):
        flat[ends[i] - lengths[i]: ends[i] - 1] = e.ids
    flat[ends[good] - 1] = eot
    offsets = np.concatenate([[0], ends]).astype(np.int64)
    split = ["val" if doc_hash(d, "split") < val_fraction else "train" for d in ids]
    skip = [None if isinstance(t, str) and t.strip() else "empty_or_missing_text" for t in texts]
    return pa.table({
        "id": pa.array(ids, pa.string()),
        "split": pa.array(split, pa.string()),
        "skip": pa.array(skip, pa.string()),
        "ids": pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(flat)),
    })


class ShardWriter:
    """Packs one split's token stream into rows of seq_len+1 and writes full shards as they fill."""

    def __init__(self, run: RunDir, split: str, seq_len: int, shard_sequences: int, dtype: np.dtype):
        self.run, self.split, self.width, self.rows = run, split, seq_len + 1, shard_sequences
        self.dtype = dtype
        self.buffer: list[np.ndarray] = []
        self.buffered = 0
        self.shards: list[str] = []
        self.shard_sequences: list[int] = []
        self.documents = 0
        self.document_tokens = 0

    def add(self, tokens: np.ndarray, documents: int) -> None:
        self.buffer.append(tokens)
        self.buffered += len(tokens)
        self.documents += documents
        self.document_tokens += len(tokens)
        while self.buffered >= self.rows * self.width:
            self._flush(self.rows)

    def _flush(self, rows: int) -> None:
        stream = np.concatenate(self.buffer) if len(self.buffer) > 1 else self.buffer[0]
        n = rows * self.width
        self._write(stream[:n].astype(self.dtype, copy=False).reshape(rows, self.width))
        self.buffer = [stream[n:]]
        self.buffered = len(stream) - n

    def _write(self, array: np.ndarray) -> None:
        name = f"{self.split}-{len(self.shards):05d}.npy"
        target = self.run._p(f"tokens/{name}")
        tmp = f"{target}.tmp"
        with self.run.fs.open(tmp, "wb") as f:
            np.save(f, array)
        self.run.fs.mv(tmp, target)
        self.shards.append(name)
        self.shard_sequences.append(len(array))

    def finish(self) -> dict:
        """Write the last full rows; fewer than seq_len+1 leftover tokens are dropped and counted."""
        rows = self.buffered // self.width
        if rows:
            self._flush(rows)
        sequences = sum(self.shard_sequences)
        return {
            "shards": self.shards,
            "shard_sequences": self.shard_sequences,
            "sequences": sequences,
            "tokens": sequences * self.width,
            "documents": self.documents,
            "document_tokens": self.document_tokens,
            "dropped_tail_tokens": self.document_tokens - sequences * self.width,
        }


def _pieces(cfg: TokenizeConfig, parquets: list[str]) -> list[dict]:
    """Units of read work: whole files when there are enough of them, else row-group slices."""
    if len(parquets) >= cfg.min_blocks:
        return [{"path": p, "row_group": -1, "start": 0, "stop": -1} for p in parquets]
    import fsspec
    import pyarrow.parquet as pq

    groups = []
    for path in parquets:
        with fsspec.open(path, "rb") as f:
            meta = pq.ParquetFile(f).metadata
        groups += [(path, g, meta.row_group(g).num_rows) for g in range(meta.num_row_groups)]
    step = max(1, -(-sum(n for *_, n in groups) // cfg.min_blocks))
    return [{"path": p, "row_group": g, "start": a, "stop": min(a + step, n)}
            for p, g, n in groups for a in range(0, n, step)]


def read_and_tokenize(pieces, *, columns: list[str], batch_size: int, **encode):
    """Ray Data map over read pieces: read each parquet piece, then `tokenize_batch` it in batches."""
    import fsspec
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = []
    for path, group, start, stop in zip(*(pieces.column(c).to_pylist() for c in
                                         ("path", "row_group", "start", "stop")), strict=True):
        with fsspec.open(path, "rb") as f:
            if group < 0:
                table = pq.read_table(f, columns=columns)
            else:
                table = pq.ParquetFile(f).read_row_group(group, columns=columns).slice(start, stop - start)
        out += [tokenize_batch(table.slice(i, batch_size), **encode)
                for i in range(0, max(table.num_rows, 1), batch_size)]
    return pa.concat_tables(out)


def _dataset(cfg: TokenizeConfig, files: list[str], tok_path: str):
    """Tokenized rows as a Ray Dataset of one operator: each task reads its piece and encodes it.

    Our own pieces instead of `read_parquet`: its file listing and read operators cost seconds
    of scheduling per run on a small cluster, more than encoding a few million tokens.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray

    encode = {"tokenizer_path": tok_path, "val_fraction": cfg.val_fraction}
    parts = []
    texts = [f for f in files if f.endswith(".txt")]
    if texts:
        rows = list(iter_documents(texts, text_split=cfg.text_split))
        table = pa.table({"id": [r[0] for r in rows], "text": [r[1] for r in rows]})
        step = max(1, -(-len(rows) // cfg.min_blocks))
        blocks = [table.slice(i, step) for i in range(0, len(rows), step)] or [table]
        parts.append(ray.data.from_arrow(blocks).map_batches(
            tokenize_batch, fn_kwargs=encode, batch_size=cfg.batch_size, batch_format="pyarrow",
            num_cpus=cfg.cpus_per_task))
    parquets = [f for f in files if not f.endswith(".txt")]
    if parquets:
        import fsspec

        with fsspec.open(parquets[0], "rb") as f:
            names = pq.read_schema(f).names
        if cfg.text_column not in names:
            raise StageError(f"{parquets[0]}: no column {cfg.text_column!r} (columns: {names})")
        has_id = cfg.id_column in names
        pieces = _pieces(cfg, parquets)
        parts.append(ray.data.from_items(pieces, override_num_blocks=len(pieces)).map_batches(
            read_and_tokenize, batch_size=1, batch_format="pyarrow", num_cpus=cfg.cpus_per_task,
            fn_kwargs={**encode, "batch_size": cfg.batch_size, "text_column": cfg.text_column,
                       "id_column": cfg.id_column if has_id else None,
                       "columns": [cfg.text_column] + ([cfg.id_column] if has_id else [])}))
    return parts[0] if len(parts) == 1 else parts[0].union(*parts[1:])


def run(cfg: TokenizeConfig) -> dict:
    import ray
    from ray.data import DataContext

    started = time.time()
    run_dir = RunDir(cfg.run_dir)
    tok_path = cfg.tokenizer or run_dir.require("tokenizer/tokenizer.json", made_by="tokenizer").rsplit("/", 1)[0]
    from pipeline.tokenizer import load_tokenizer

    tok = load_tokenizer(tok_path)
    vocab_size, dtype = len(tok), token_dtype(len(tok))
    files = input_files(cfg.run_dir, cfg.input)

    DataContext.get_current().execution_options.preserve_order = True
    ds = _dataset(cfg, files, tok_path)
    run_dir.remove("tokens")
    run_dir.makedirs("tokens")
    writers = {s: ShardWriter(run_dir, s, cfg.seq_len, cfg.shard_sequences, dtype) for s in SPLITS}
    skipped: dict[str, int] = {}
    skipped_ids: list[str] = []
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        skip = batch.column("skip").to_pylist()
        split = np.asarray(batch.column("split").to_pylist())
        for i, reason in enumerate(skip):
            if reason is not None:
                skipped[reason] = skipped.get(reason, 0) + 1
                skipped_ids.append(batch.column("id")[i].as_py())
        ok = np.array([r is None for r in skip], dtype=bool)
        col = batch.column("ids").combine_chunks()
        offsets = col.offsets.to_numpy()
        values = col.values.to_numpy()
        for s, writer in writers.items():
            rows = np.flatnonzero((split == s) & ok)
            if len(rows):
                # Rows of one split are rarely contiguous: gather their slices in order.
                tokens = np.concatenate([values[offsets[r]:offsets[r + 1]] for r in rows])
                writer.add(tokens, len(rows))
    splits = {s: w.finish() for s, w in writers.items()}
    if skipped_ids:
        run_dir.write_text("tokens/skipped.txt", "\n".join(skipped_ids) + "\n")
    manifest = {
        "vocab_size": vocab_size,
        "seq_len": cfg.seq_len,
        "dtype": dtype.name,
        "eot_id": tok.convert_tokens_to_ids(EOT),
        "pad_id": tok.convert_tokens_to_ids(PAD),
        "splits": splits,
        "tokenizer": tok_path,
        "inputs": files,
        "val_fraction": cfg.val_fraction,
        "skipped_documents": skipped,
        "seconds": round(time.time() - started, 2),
    }
    # The manifest is written last: a reader that finds it finds every shard it names.
    out = run_dir.write_json("tokens/manifest.json", manifest)
    total = sum(v["document_tokens"] for v in splits.values())
    return {
        "artifacts": out,
        "documents": {s: v["documents"] for s, v in splits.items()},
        "sequences": {s: v["sequences"] for s, v in splits.items()},
        "tokens": total,
        "skipped_documents": skipped,
        "tokens_per_s": round(total / max(time.time() - started, 1e-9)),
        "ray_nodes": len(ray.nodes()),
    }


class ShardReader:
    """Random access to one split's rows: `read(indices)` -> int64 array (len(indices), seq_len+1)."""

    def __init__(self, tokens_dir: str, split: str = "train"):
        import fsspec

        self.tokens_dir = str(tokens_dir).rstrip("/")
        self.fs, base = fsspec.core.url_to_fs(self.tokens_dir)
        manifest_path = posixpath.join(base, "manifest.json")
        if not self.fs.exists(manifest_path):
            raise StageError(f"{self.tokens_dir}/manifest.json not found: run `d2d tokenize` first")
        import json

        with self.fs.open(manifest_path, "r") as f:
            self.manifest = json.load(f)
        if split not in self.manifest["splits"]:
            raise ValueError(f"split: {split!r} is not one of {', '.join(self.manifest['splits'])}")
        info = self.manifest["splits"][split]
        self.split = split
        self.seq_len = int(self.manifest["seq_len"])
        self.vocab_size = int(self.manifest["vocab_size"])
        self.eot_id = int(self.manifest["eot_id"])
        self.dtype = np.dtype(self.manifest["dtype"])
        self.num_sequences = int(info["sequences"])
        self._starts = np.concatenate([[0], np.cumsum(info["shard_sequences"])]).astype(np.int64)
        self._paths = [posixpath.join(base, s) for s in info["shards"]]
        self._remote = is_remote(self.tokens_dir)
        self._open: dict[int, object] = {}

    def __len__(self) -> int:
        return self.num_sequences

    def __getstate__(self):
        # Memory maps and header offsets are per process: rebuild them after pickling (Ray workers).
        return {**self.__dict__, "_open": {}}

    def _shard(self, k: int):
        """A local shard's memory map, or a remote shard's byte offset to its first row."""
        if k not in self._open:
            if not self._remote:
                self._open[k] = np.load(self._paths[k], mmap_mode="r")
            else:
                with self.fs.open(self._paths[k], "rb") as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    read_header(f)
                    self._open[k] = f.tell()
        return self._open[k]

    def read(self, indices) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if len(idx) and (idx.min() < 0 or idx.max() >= self.num_sequences):
            raise IndexError(f"indices must be in [0, {self.num_sequences}) for split {self.split!r}")
        width = self.seq_len + 1
        out = np.empty((len(idx), width), dtype=np.int64)
        shard = np.searchsorted(self._starts, idx, side="right") - 1
        row = idx - self._starts[shard]
        if not self._remote:
            for k in np.unique(shard):
                sel = shard == k
                out[sel] = self._shard(int(k))[row[sel]]
            return out
        row_bytes = width * self.dtype.itemsize
        starts = [self._shard(int(k)) + int(r) * row_bytes for k, r in zip(shard, row, strict=True)]
        blobs = self.fs.cat_ranges([self._paths[k] for k in shard], starts, [s + row_bytes for s in starts])
        for i, blob in enumerate(blobs):
            out[i] = np.frombuffer(blob, dtype=self.dtype)
        return out
