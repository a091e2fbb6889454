"""Readers: WARC/WET/ARC (fastwarc, warcio for ARC and as fallback), JSONL/JSON.gz, parquet.

    .venv/bin/python -m pipeline.curate.readers '../shared/data/web/*.warc.gz'

`expand_inputs` turns paths, globs, directories, https://, s3:// and cc:// inputs
into a sorted file list; `demo://?pages=N&seed=S[&per_file=K]` writes the demo crawl
to RUN/demo_crawl/ and a seeds file (`seeds.txt` or `seeds://path`) is crawled into
RUN/crawl/ first, so both plug in as WARC inputs. `read_file` yields `(doc, reason)` pairs: a document dict
with reason "" or `None` with the reason a record was set aside (clipped,
malformed, revisit, ...), so a broken file keeps its good records and the bad ones
are counted.
"""

from __future__ import annotations

import glob as _glob
import gzip
import hashlib
import io
import json
import os
import posixpath
import sys
import zlib
from collections.abc import Iterator

from pipeline.acquire.bounded import DecodedTooLarge
from pipeline.errors import StageError

WARC_EXT = (".warc", ".warc.gz", ".wet", ".wet.gz", ".arc", ".arc.gz")
JSON_EXT = (".jsonl", ".jsonl.gz", ".json", ".json.gz")
PARQUET_EXT = (".parquet",)
KNOWN_EXT = WARC_EXT + JSON_EXT + PARQUET_EXT


def doc_key(ident: str) -> int:
    """A stable positive int64 for a document id (the dedup keep rule orders by it)."""
    return int.from_bytes(hashlib.sha1(ident.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def demo_crawl(spec: str, run_dir: str) -> list[str]:
    """WARCs of `demo://?pages=N&seed=S[&per_file=K]`, written once to RUN/demo_crawl/ (reused when the params match)."""
    from urllib.parse import parse_qs, urlsplit

    from pipeline.acquire.democrawl import write_demo_crawl

    q = {k: v[-1] for k, v in parse_qs(urlsplit(spec).query).items()}
    try:
        params = {"n_pages": int(q.pop("pages", 400)), "seed": int(q.pop("seed", 0)),
                  "pages_per_file": int(q.pop("per_file", 200))}
    except ValueError as e:
        raise StageError(f"input {spec!r}: pages, seed and per_file must be integers") from e
    if q:
        raise StageError(f"input {spec!r}: unknown parameters {sorted(q)} (pages, seed, per_file)")
    if "://" in run_dir and not run_dir.startswith("file://"):
        return _remote_demo_crawl(spec, run_dir, params)
    out = os.path.join(os.path.abspath(run_dir.removeprefix("file://")), "demo_crawl")
    marker = os.path.join(out, "params.json")
    if os.path.exists(marker):
        with open(marker) as f:
            done = json.load(f)
        if done.get("params") == params and all(os.path.exists(p) for p in done.get("files", [])):
            return done["files"]
    try:
        files = write_demo_crawl(out, **params)
    except ValueError as e:
        raise StageError(f"input {spec!r}: {e}") from e
    tmp = f"{marker}.tmp"
    with open(tmp, "w") as f:
        json.dump({"params": params, "files": files}, f)
    os.replace(tmp, marker)  # written last: a half-written crawl is rewritten next time
    return files


def _remote_demo_crawl(spec: str, run_dir: str, params: dict) -> list[str]:
    """The demo crawl for an object-store run dir: written locally, uploaded to RUN/demo_crawl/,
    so that curation tasks on every node read the same files from the store."""
    import tempfile

    from pipeline.acquire.democrawl import write_demo_crawl
    from pipeline.runfs import RunDir

    rd = RunDir(run_dir)
    if rd.exists("demo_crawl/params.json"):
        done = rd.read_json("demo_crawl/params.json")
        if done.get("params") == params and all(rd.fs.exists(rd._p(posixpath.relpath(f, rd.root)))
                                                for f in done.get("files", [])):
            return done["files"]
    with tempfile.TemporaryDirectory(prefix="d2d-demo-") as tmp:
        try:
            local = write_demo_crawl(tmp, **params)
        except ValueError as e:
            raise StageError(f"input {spec!r}: {e}") from e
        rd.upload_dir(tmp, "demo_crawl")
    files = [rd.path("demo_crawl", os.path.relpath(f, tmp)) for f in local]
    rd.write_json("demo_crawl/params.json", {"params": params, "files": files})  # last: the commit marker
    return files


def seed_crawl(spec: str, run_dir: str, crawl: dict | None = None) -> list[str]:
    """WARCs from crawling the seed URLs listed in `spec` (a .txt file or seeds://path) into RUN/crawl/."""
    from pipeline.acquire.crawler import crawl_seeds

    path = spec.removeprefix("seeds://")
    if not os.path.isfile(path):
        raise StageError(f"seeds file {path!r} does not exist")
    files = crawl_seeds(path, run_dir, crawl)
    if not files:
        raise StageError(f"crawling the seeds in {path!r} produced no WARC files")
    return sorted(files)


def expand_inputs(inputs: list[str], cc_base_url: str = "", retries: int = 3, backoff_s: float = 1.0,
                  run_dir: str = "runs/default", crawl: dict | None = None) -> list[str]:
    """Every input file, in a stable order. StageError when an input names nothing."""
    files: list[str] = []
    for spec in inputs:
        if spec.lower().startswith("demo://"):
            files += demo_crawl(spec, run_dir)
        elif spec.lower().startswith("seeds://") or (spec.lower().endswith(".txt") and "://" not in spec):
            files += seed_crawl(spec, run_dir, crawl)
        elif spec.lower().startswith("cc://"):
            from pipeline.acquire.commoncrawl import resolve_cc

            files += resolve_cc(spec, cc_base_url, retries=retries, backoff_s=backoff_s)
        elif spec.startswith(("http://", "https://")):
            files.append(spec)
        elif "://" in spec and not spec.startswith("file://"):
            import fsspec

            fs, path = fsspec.core.url_to_fs(spec)
            proto = spec.split("://", 1)[0]
            found = fs.find(path) if fs.isdir(path) else fs.glob(path)
            found = [f for f in found if f.endswith(KNOWN_EXT)]
            if not found:
                raise StageError(f"input {spec!r} names no readable files")
            files += [f"{proto}://{f}" for f in sorted(found)]
        else:
            spec = spec.removeprefix("file://")
            if os.path.isdir(spec):
                found = [os.path.join(r, f) for r, _, fs in os.walk(spec) for f in fs]
            else:
                found = _glob.glob(spec, recursive=True)
            found = sorted(os.path.abspath(f) for f in found if os.path.isfile(f) and f.endswith(KNOWN_EXT))
            if not found:
                raise StageError(f"input {spec!r} names no readable files ({', '.join(KNOWN_EXT)})")
            files += found
    return files


def open_input(path: str, retries: int = 3, backoff_s: float = 1.0):
    if path.startswith(("http://", "https://")):
        from pipeline.acquire.fetch import open_remote

        return open_remote(path, retries=retries, backoff_s=backoff_s)
    if "://" in path and not path.startswith("file://"):
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path.removeprefix("file://"), "rb")


def _base(path: str) -> str:
    return path.split("?", 1)[0].lower()


def read_file(path: str, max_bytes: int, retries: int = 3, backoff_s: float = 1.0) -> Iterator[tuple[dict | None, str]]:
    """Documents of one file; unreadable parts come out as (None, reason)."""
    name = _base(path)
    try:
        f = open_input(path, retries, backoff_s)
    except (OSError, StageError) as e:
        yield None, f"unreadable_file:{type(e).__name__}"
        return
    with f:
        if name.endswith((".arc", ".arc.gz")):
            yield from _read_warcio(f, path, max_bytes)
        elif name.endswith(WARC_EXT):
            yield from _read_fastwarc(f, path, max_bytes)
        elif name.endswith(JSON_EXT):
            yield from _read_json(f, path, name, max_bytes)
        else:
            yield from _read_parquet(f, path, max_bytes)


def _strip_uri(u: str | None) -> str:
    return (u or "").strip().strip("<>")


def _payload_doc(path, idx, url, record_id, body: bytes, ctype: str, status: int, kind: str) -> dict:
    return {"id": f"{record_id or path + '#' + str(idx)}", "url": url, "source": path,
            "raw": body, "content_type": ctype.lower(), "status": status, "kind": kind}


def http_payload(body: bytes, transfer_encoding: str, content_encoding: str, limit: int) -> bytes:
    """The entity body as the server meant it: chunked framing removed and gzip/deflate/br undone.

    fastwarc hands over the raw bytes, whose chunk sizes would leak into the text. The raw bytes are
    read first so a clipped record is still told by its length; decoding stops at `limit` bytes
    (DecodedTooLarge: a few KB of gzip or brotli can expand to GBs); a body that does not decode stays
    as stored and the later steps judge it."""
    from warcio.bufferedreaders import ChunkedDataReader

    from pipeline.acquire.bounded import BodyDecoder

    dec = BodyDecoder(content_encoding, limit)
    if transfer_encoding.lower().strip() == "chunked":
        try:
            # Without decompression the de-chunked body is never larger than the stored one.
            body = ChunkedDataReader(io.BytesIO(body), decomp_type=None).read()
        except Exception:  # noqa: BLE001 - broken framing: judge the bytes as stored
            return body
    if dec.identity:
        return body
    try:
        return dec.feed(body)
    except DecodedTooLarge:
        raise
    except Exception:  # noqa: BLE001 - zlib/brotli raise their own types on broken streams
        return body


def _read_fastwarc(f, path: str, max_bytes: int):
    try:
        from fastwarc.warc import ArchiveIterator, WarcRecordType
    except ImportError:  # warcio reads the same files, only slower
        yield from _read_warcio(f, path, max_bytes)
        return
    wanted = WarcRecordType.response | WarcRecordType.resource | WarcRecordType.conversion | WarcRecordType.revisit | WarcRecordType.unknown
    idx = 0
    try:
        for r in ArchiveIterator(f, record_types=wanted, parse_http=True):
            idx += 1
            rtype = r.record_type
            if rtype == WarcRecordType.revisit:
                yield None, "revisit_record"
                continue
            if rtype == WarcRecordType.unknown:
                yield None, "unknown_record_type"
                continue
            expected = r.content_length
            if expected > max_bytes:
                yield None, "oversized"
                continue
            body = r.reader.read()
            if len(body) < expected:
                yield None, "clipped_record"
                continue
            url = _strip_uri(r.headers.get("WARC-Target-URI"))
            rid = r.headers.get("WARC-Record-ID")
            if rtype == WarcRecordType.conversion:
                yield _payload_doc(path, idx, url, rid, body, "text/plain", 200, "text"), ""
                continue
            if r.is_http and r.http_headers is not None:
                status = r.http_headers.status_code or 0
                ctype = r.http_headers.get("Content-Type") or ""
                try:
                    body = http_payload(body, r.http_headers.get("Transfer-Encoding") or "",
                                        r.http_headers.get("Content-Encoding") or "", max_bytes)
                except DecodedTooLarge:
                    yield None, "decoded_too_large"
                    continue
            else:
                status, ctype = 200, r.headers.get("Content-Type") or ""
            yield _payload_doc(path, idx, url, rid, body, ctype, status, "html"), ""
    except (OSError, ValueError, EOFError) as e:
        yield None, "malformed_record" if "header" in str(e).lower() else f"truncated_file:{type(e).__name__}"


def _read_warcio(f, path: str, max_bytes: int):
    from warcio.archiveiterator import ArchiveIterator

    idx = 0
    try:
        for r in ArchiveIterator(f, arc2warc=True):
            idx += 1
            if r.rec_type == "revisit":
                yield None, "revisit_record"
                continue
            if r.rec_type not in ("response", "resource", "conversion"):
                continue
            expected = int(r.rec_headers.get_header("Content-Length") or 0)
            if expected > max_bytes:
                yield None, "oversized"
                continue
            body = r.raw_stream.read(max_bytes + 1)
            if r.http_headers is not None and r.rec_type != "conversion":
                try:
                    body = http_payload(body, r.http_headers.get_header("Transfer-Encoding") or "",
                                        r.http_headers.get_header("Content-Encoding") or "", max_bytes)
                except DecodedTooLarge:
                    yield None, "decoded_too_large"
                    continue
            url = _strip_uri(r.rec_headers.get_header("WARC-Target-URI"))
            rid = r.rec_headers.get_header("WARC-Record-ID")
            if r.rec_type == "conversion":
                yield _payload_doc(path, idx, url, rid, body, "text/plain", 200, "text"), ""
            elif r.http_headers is not None:
                status = int(r.http_headers.get_statuscode() or 0)
                yield _payload_doc(path, idx, url, rid, body, r.http_headers.get_header("Content-Type") or "", status, "html"), ""
            else:
                yield _payload_doc(path, idx, url, rid, body, r.rec_headers.get_header("Content-Type") or "", 200, "html"), ""
    except Exception as e:  # warcio raises many types on broken input; the file's good records are already out
        yield None, f"truncated_file:{type(e).__name__}"


def _lines(stream, max_bytes: int):
    """Lines of a binary stream, each read with a cap: a longer line comes out as None (its rest skipped)."""
    while True:
        line = stream.readline(max_bytes + 1)
        if not line:
            return
        if len(line) > max_bytes and not line.endswith(b"\n"):
            while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass
            yield None
            continue
        yield line


def _read_json(f, path: str, name: str, max_bytes: int):
    # gzip.open decompresses only as far as each readline asks: a bomb costs the cap, not its size.
    stream = gzip.open(f) if name.endswith(".gz") else f
    try:
        for idx, raw in enumerate(_lines(stream, max_bytes)):
            if raw is None:
                yield None, "oversized"
                continue
            line = raw.decode("utf-8", "replace")
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                yield None, "malformed_json"
                continue
            text = row.get("text") if isinstance(row, dict) else None
            if not isinstance(text, str):
                yield None, "no_text_field"
                continue
            meta = row.get("metadata") if isinstance(row.get("metadata"), dict) else {}
            url = str(row.get("url") or meta.get("url") or "")
            yield {"id": str(row.get("id") or f"{path}#{idx}"), "url": url, "source": path, "raw": text.encode(),
                   "content_type": "text/plain", "status": 200, "kind": "text"}, ""
    except (OSError, EOFError, zlib.error) as e:
        yield None, f"truncated_file:{type(e).__name__}"


def _read_parquet(f, path: str, max_bytes: int):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(f)
    except Exception as e:  # pyarrow raises ArrowInvalid/OSError variants for broken files
        yield None, f"unreadable_file:{type(e).__name__}"
        return
    if "text" not in table.column_names:
        yield None, "no_text_field"
        return
    cols = table.to_pydict()
    for idx, text in enumerate(cols["text"]):
        if not isinstance(text, str):
            yield None, "no_text_field"
            continue
        if len(text) > max_bytes:
            yield None, "oversized"
            continue
        ident = cols.get("id", [None] * (idx + 1))[idx]
        yield {"id": str(ident or f"{path}#{idx}"), "url": str((cols.get("url") or [""] * (idx + 1))[idx] or ""),
               "source": path, "raw": text.encode(), "content_type": "text/plain", "status": 200, "kind": "text"}, ""


if __name__ == "__main__":
    from collections import Counter

    for p in expand_inputs(sys.argv[1:]):
        c = Counter("doc" if d else r for d, r in read_file(p, 2_000_000))
        print(p, dict(c))
