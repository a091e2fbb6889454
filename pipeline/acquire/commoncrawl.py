"""Common Crawl inputs: `cc://CRAWL-ID?segments=N` resolved to the URLs of WARC/WET files.

    .venv/bin/python -c "from pipeline.acquire.commoncrawl import resolve_cc; \
print(resolve_cc('cc://CC-MAIN-2024-22?files=2&kind=wet', 'https://data.commoncrawl.org/'))"

A crawl publishes `crawl-data/CRAWL-ID/warc.paths.gz` (and `wet.paths.gz`): one
file path a line, sorted, grouped by segment. `segments=N` takes every file of the
first N segments in listing order, `files=N` the first N files (after `segments`,
if both are given), `kind=warc|wet` picks the listing (default warc). The choice is
deterministic, so a re-run reads the same files. The listing comes from
`base_url`: the public HTTPS endpoint by default, `s3://commoncrawl/` with s3fs,
or any mirror (a local test server).
"""

from __future__ import annotations

import gzip
import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from pipeline.acquire.fetch import open_remote

DEFAULT_BASE_URL = "https://data.commoncrawl.org/"
_CRAWL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_KINDS = ("warc", "wet")


@dataclass(frozen=True)
class CCSpec:
    crawl_id: str
    kind: str = "warc"
    segments: int | None = None
    files: int | None = None

    @property
    def listing(self) -> str:
        return f"crawl-data/{self.crawl_id}/{self.kind}.paths.gz"


def is_cc_uri(uri: str) -> bool:
    return str(uri).lower().startswith("cc://")


def _positive_int(name: str, raw: list[str], uri: str) -> int:
    if len(raw) != 1 or not raw[0].strip().isdigit() or int(raw[0]) < 1:
        raise ValueError(f"{uri!r}: {name} must be one positive integer, got {'&'.join(raw)!r}")
    return int(raw[0])


def parse_cc_uri(uri: str) -> CCSpec:
    """`cc://CC-MAIN-2024-22?segments=2&kind=wet` -> CCSpec; ValueError naming the problem."""
    if not is_cc_uri(uri):
        raise ValueError(f"{uri!r}: a Common Crawl input starts with cc://, e.g. cc://CC-MAIN-2024-22?segments=1")
    parts = urlsplit(uri)
    crawl_id = parts.netloc + parts.path.rstrip("/")
    if not crawl_id:
        raise ValueError(f"{uri!r}: missing crawl id, e.g. cc://CC-MAIN-2024-22?segments=1")
    if not _CRAWL_ID.match(crawl_id):
        raise ValueError(f"{uri!r}: bad crawl id {crawl_id!r} (letters, digits, '.', '_' and '-' only)")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError:
        raise ValueError(f"{uri!r}: malformed query {parts.query!r}; expected key=value&key=value") from None
    unknown = sorted(set(query) - {"segments", "files", "kind"})
    if unknown:
        raise ValueError(f"{uri!r}: unknown option(s) {', '.join(unknown)}; known: segments, files, kind")
    kind = query.get("kind", ["warc"])
    if len(kind) != 1 or kind[0].lower() not in _KINDS:
        raise ValueError(f"{uri!r}: kind must be one of {', '.join(_KINDS)}, got {'&'.join(kind)!r}")
    segments = _positive_int("segments", query["segments"], uri) if "segments" in query else None
    files = _positive_int("files", query["files"], uri) if "files" in query else None
    if segments is None and files is None:
        # A whole crawl is ~90,000 files (~100 TB): never the silent default.
        raise ValueError(f"{uri!r}: say how much to read with segments=N or files=N")
    return CCSpec(crawl_id=crawl_id, kind=kind[0].lower(), segments=segments, files=files)


def _segment_of(path: str) -> str:
    """`crawl-data/X/segments/1715971057216.39/warc/...` -> `1715971057216.39`."""
    bits = path.split("/")
    if "segments" in bits and bits.index("segments") + 1 < len(bits):
        return bits[bits.index("segments") + 1]
    return path.rsplit("/", 1)[0]


def select_paths(paths: list[str], spec: CCSpec) -> list[str]:
    """The listing's files that `spec` asks for, in listing order (pure, deterministic)."""
    chosen = paths
    if spec.segments is not None:
        keep: list[str] = []
        seen: set[str] = set()
        for p in paths:
            seg = _segment_of(p)
            if seg not in seen:
                if len(seen) == spec.segments:
                    continue
                seen.add(seg)
            keep.append(p)
        chosen = keep
    if spec.files is not None:
        chosen = chosen[: spec.files]
    return chosen


def normalise_base_url(base_url: str) -> str:
    base = (base_url or DEFAULT_BASE_URL).strip()
    if not re.match(r"^(https?|s3)://", base):
        raise ValueError(f"cc_base_url: {base_url!r} must start with https://, http:// or s3://")
    return base if base.endswith("/") else base + "/"


def read_listing(url: str, retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 30) -> list[str]:
    """The file paths in a `*.paths.gz` listing (gzip or plain text)."""
    with open_remote(url, retries=retries, backoff_s=backoff_s, timeout_s=timeout_s) as f:
        data = f.read()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    return [ln.strip() for ln in data.decode("utf-8").splitlines() if ln.strip()]


def resolve_cc(uri: str, base_url: str = DEFAULT_BASE_URL, retries: int = 3,
               backoff_s: float = 1.0, timeout_s: float = 30) -> list[str]:
    """Full URLs of the WARC/WET files that `uri` selects, read from `base_url`'s listing.

    ValueError for a bad uri or base_url; StageError when the listing cannot be
    fetched (404: the crawl id is wrong) or selects nothing.
    """
    from pipeline.errors import StageError

    spec = parse_cc_uri(uri)
    base = normalise_base_url(base_url)
    paths = read_listing(base + spec.listing, retries, backoff_s, timeout_s)
    chosen = select_paths(paths, spec)
    if not chosen:
        raise StageError(f"{uri}: the listing {base + spec.listing} names no files")
    return [p if "://" in p else base + p.lstrip("/") for p in chosen]
