"""Input documents for the tokenizer and the token shards: .txt or .parquet files, local or remote.

    PYTHONPATH=. python -m pipeline.documents runs/demo/curated     # count the documents there

`input_files` finds the files (a file, folder or glob, or RUN/curated/*.parquet),
`iter_documents` yields (doc_id, text) from them (a .txt file splits into
paragraphs, lines or one document), and `doc_hash` gives each document id a fixed
uniform number for deterministic splits and samples.
"""

from __future__ import annotations

import hashlib
import posixpath
import sys
from collections.abc import Iterator


def split_text_documents(text: str, mode: str) -> list[str]:
    """A text file's documents: blank-line paragraphs, lines, or the whole file."""
    if mode == "file":
        parts = [text]
    elif mode == "line":
        parts = text.splitlines()
    else:
        parts = [p.strip("\n") for p in text.replace("\r\n", "\n").split("\n\n")]
    return [p for p in parts if p.strip()]


def input_files(run_dir: str, input: str | None) -> list[str]:
    """The .txt/.parquet files to read: `input` (file, folder or glob) or RUN/curated/*.parquet."""
    from pipeline.errors import StageError
    from pipeline.runfs import RunDir

    if input is None:
        run = RunDir(run_dir)
        run.require("curated", made_by="curate")
        files = run.glob("curated/*.parquet")
    else:
        import fsspec

        fs, base = fsspec.core.url_to_fs(input)
        if fs.isdir(base):
            found = [p for p in fs.find(base) if p.endswith((".parquet", ".txt"))]
        else:
            found = fs.glob(base) if any(c in base for c in "*?[") else ([base] if fs.exists(base) else [])
        proto = input.split("://", 1)[0] + "://" if "://" in input else ""
        files = sorted(proto + p for p in found)
    if not files:
        raise StageError(f"no .parquet or .txt input found at {input or run_dir + '/curated'}")
    return files


def doc_hash(doc_id: str, salt: str = "") -> float:
    """A uniform number in [0, 1) fixed by the document id: deterministic splits and samples."""
    h = hashlib.blake2b(f"{salt}{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2**64


def iter_documents(files: list[str], *, text_split: str = "paragraph", text_column: str = "text",
                   id_column: str = "id") -> Iterator[tuple[str, str | None]]:
    """(doc_id, text) for every document; text is None where a parquet row has none."""
    import fsspec
    import pyarrow.parquet as pq

    from pipeline.errors import StageError

    for path in files:
        name = posixpath.basename(path)
        if path.endswith(".txt"):
            with fsspec.open(path, "r", encoding="utf-8", errors="replace") as f:
                docs = split_text_documents(f.read(), text_split)
            yield from ((f"{name}:{i}", d) for i, d in enumerate(docs))
            continue
        with fsspec.open(path, "rb") as f:
            pf = pq.ParquetFile(f)
            if text_column not in pf.schema_arrow.names:
                raise StageError(f"{path}: no column {text_column!r} (columns: {pf.schema_arrow.names})")
            cols = [text_column] + ([id_column] if id_column in pf.schema_arrow.names else [])
            row = 0
            for batch in pf.iter_batches(columns=cols, batch_size=4096):
                texts = batch.column(text_column).to_pylist()
                ids = batch.column(id_column).to_pylist() if len(cols) > 1 else [None] * len(texts)
                for i, (t, d) in enumerate(zip(texts, ids, strict=True)):
                    yield (str(d) if d is not None else f"{name}:{row + i}"), (t if isinstance(t, str) else None)
                row += len(texts)


if __name__ == "__main__":
    found = input_files("", sys.argv[1])
    print(f"{sum(1 for _ in iter_documents(found))} documents in {len(found)} files")
