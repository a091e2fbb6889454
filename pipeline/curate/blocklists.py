"""Blocklists and word lists from files, folders, archives or URLs, fetched once into a checksummed cache.

    .venv/bin/python -c "from pipeline.curate.blocklists import load_domains; \
print(len(load_domains(['/path/to/blacklists'], ['adult', 'phishing', 'malware'])))"

Formats:
- UT1 (Université Toulouse 1 Capitole's blacklists, the layout datatrove's URL filter ships):
  a folder or `.tar.gz` with `CATEGORY/domains` (one domain a line) and `CATEGORY/urls`
  (one URL without scheme a line); only the categories asked for are read. A flat
  `domains`/`urls` pair (datatrove's own archive) is category `blocklist`.
- A plain text file: one domain (or URL) a line, category `custom`. `#` starts a comment.
- A word list (LDNOOBW's layout): one word or phrase a line, lower-cased; no comments
  (real lists hold entries such as `#xx`).

An `http(s)://` source is downloaded once into `cache_dir` (`~/.cache/d2d/blocklists`
unless set), capped at `MAX_DOWNLOAD_BYTES`, and its SHA-256 is written beside it;
a later run reuses the copy only if it still has that hash, and a configured
`sha256` must match, or the load fails naming the source.
"""

from __future__ import annotations

import hashlib
import os
import tarfile

from pipeline.errors import StageError

MAX_DOWNLOAD_BYTES = 256 << 20


def default_cache_dir() -> str:
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "d2d", "blocklists")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_cached(source: str, cache_dir: str = "", sha256: str = "") -> str:
    """A local path for `source`: itself if local, else the cached download (fetched at most once)."""
    if not source.startswith(("http://", "https://")):
        if not os.path.exists(source):
            raise StageError(f"blocklist source {source!r} does not exist")
        if sha256 and os.path.isfile(source) and _sha256(source) != sha256:
            raise StageError(f"blocklist source {source!r}: sha256 differs from the configured {sha256}")
        return source
    import httpx

    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, exist_ok=True)
    name = hashlib.sha1(source.encode()).hexdigest()[:16] + "-" + os.path.basename(source.split("?")[0])[-60:]
    path = os.path.join(cache_dir, name)
    if os.path.exists(path) and os.path.exists(path + ".sha256"):
        with open(path + ".sha256") as f:
            recorded = f.read().strip()
        if _sha256(path) == recorded and (not sha256 or sha256 == recorded):
            return path
    tmp, h, size = f"{path}.tmp-{os.getpid()}", hashlib.sha256(), 0
    try:
        with httpx.stream("GET", source, timeout=60, follow_redirects=True) as r, open(tmp, "wb") as f:
            if r.status_code != 200:
                raise StageError(f"blocklist source {source}: HTTP {r.status_code}")
            for chunk in r.iter_bytes():
                size += len(chunk)
                if size > MAX_DOWNLOAD_BYTES:
                    raise StageError(f"blocklist source {source}: larger than {MAX_DOWNLOAD_BYTES} bytes")
                h.update(chunk)
                f.write(chunk)
    except httpx.HTTPError as e:
        raise StageError(f"blocklist source {source}: {type(e).__name__}: {e}") from None
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    digest = h.hexdigest()
    if sha256 and digest != sha256:
        os.remove(tmp)
        raise StageError(f"blocklist source {source}: sha256 {digest} differs from the configured {sha256}")
    os.replace(tmp, path)
    with open(path + ".sha256", "w") as f:
        f.write(digest + "\n")
    return path


def _entries(lines, comments: bool = True) -> list[str]:
    out = []
    for ln in lines:
        ln = ln.strip().lower()
        if comments:
            ln = ln.split("#", 1)[0].strip()
        if ln:
            out.append(ln)
    return out


def _ut1_members(path: str):
    """(category, kind, lines) of a UT1 folder or archive; kind is "domains" or "urls"."""
    def split(rel: str):
        parts = rel.replace("\\", "/").strip("/").split("/")
        if parts[-1] not in ("domains", "urls"):
            return None
        return (parts[-2] if len(parts) >= 2 else "blocklist"), parts[-1]

    if os.path.isdir(path):
        for root, _, files in os.walk(path):
            for fn in files:
                full = os.path.join(root, fn)
                hit = split(os.path.relpath(full, path))
                if hit:
                    with open(full, encoding="utf-8", errors="replace") as f:
                        yield *hit, f.read().splitlines()
        return
    with tarfile.open(path, "r:*") as tar:
        for m in tar:
            hit = split(m.name) if m.isfile() else None
            if hit:
                yield *hit, tar.extractfile(m).read().decode("utf-8", "replace").splitlines()


def load_domains(sources: list[str], categories: list[str], cache_dir: str = "",
                 sha256: dict[str, str] | None = None) -> dict[str, str]:
    """domain or scheme-less URL -> category, from every source (UT1 folder/archive or plain file)."""
    wanted = {c.lower() for c in categories} | {"blocklist"}
    out: dict[str, str] = {}
    for src in sources:
        path = fetch_cached(src, cache_dir, (sha256 or {}).get(src, ""))
        if os.path.isdir(path) or tarfile.is_tarfile(path):
            for cat, _kind, lines in _ut1_members(path):
                if cat.lower() in wanted:
                    for e in _entries(lines):
                        out.setdefault(e, cat.lower())
        else:
            with open(path, encoding="utf-8", errors="replace") as f:
                for e in _entries(f):
                    out.setdefault(e, "custom")
    return out


def load_words(sources: list[str], cache_dir: str = "", sha256: dict[str, str] | None = None) -> set[str]:
    """Lower-cased words and phrases of every word-list source."""
    out: set[str] = set()
    for src in sources:
        path = fetch_cached(src, cache_dir, (sha256 or {}).get(src, ""))
        with open(path, encoding="utf-8", errors="replace") as f:
            out |= set(_entries(f, comments=False))
    return out


def domain_category(host: str, url: str, listed: dict[str, str]) -> str | None:
    """The category of the longest listed suffix of `host` (a.b.example.com matches example.com), or of
    the scheme-less URL itself."""
    parts = host.split(".")
    for i in range(len(parts) - 1):
        cat = listed.get(".".join(parts[i:]))
        if cat is not None:
            return cat
    bare = url.split("://", 1)[-1].removeprefix("www.")
    return listed.get(bare, listed.get(bare.rstrip("/")))
