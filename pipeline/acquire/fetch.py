"""Streaming reads of remote files (https://, http://, s3://) that survive flaky networks.

    from pipeline.acquire.fetch import open_remote
    with open_remote("https://data.commoncrawl.org/crawl-data/CC-MAIN-2024-22/warc.paths.gz") as f:
        head = f.read(100)

HTTP(S) goes through httpx, one streamed GET. Connection errors, timeouts, 429 and
5xx answers are retried with exponential backoff (honouring Retry-After); a stream
that breaks part-way resumes where it stopped with a `Range` request, or restarts
and skips what was already delivered when the server ignores ranges. 403 and 404
(and other 4xx) raise `StageError` naming the URL: retrying cannot fix them.
`s3://` opens through fsspec when s3fs is installed. Redirects are followed here, at
most `MAX_REDIRECTS` hops, and a hop to a host that resolves (after DNS) to a loopback,
private or link-local address raises StageError unless `allow_private_redirects`: a
public URL must not be able to point the reader at the machine's own network.
"""

from __future__ import annotations

import io
import logging
import time

from pipeline.errors import StageError

log = logging.getLogger(__name__)

#: Status codes worth another try: rate limiting and server-side failures.
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
CHUNK = 1 << 16
MAX_RETRY_AFTER_S = 60.0
MAX_REDIRECTS = 5


class _HTTPStream(io.RawIOBase):
    """A raw, read-only byte stream over one HTTP resource, reconnecting on failure.

    `retries` counts consecutive failed attempts: once bytes flow again the budget
    is restored, so a long download survives several separate hiccups.
    """

    def __init__(self, url: str, retries: int, backoff_s: float, timeout_s: float,
                 headers: dict[str, str] | None = None, allow_private_redirects: bool = False):
        import httpx

        self.url = url
        self.allow_private_redirects = allow_private_redirects
        self.retries = retries
        self.backoff_s = backoff_s
        self.pos = 0
        self.size: int | None = None
        self.reconnects = 0
        self._buf = b""
        self._resp = None
        self._chunks = None
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s),
            follow_redirects=False,  # followed in _send, which checks every hop's address
            # Raw bytes as stored: a .gz file must stay gzip, never be decoded in transit.
            headers={"Accept-Encoding": "identity", **(headers or {})},
        )
        try:
            self._connect()
        except BaseException:
            self._client.close()
            raise

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        # Readers such as fastwarc ask for tell()/seek(); a jump reconnects with Range.
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_CUR:
            offset += self.pos
        elif whence == io.SEEK_END:
            if self.size is None:
                raise io.UnsupportedOperation(f"{self.url}: size unknown, cannot seek from the end")
            offset += self.size
        if offset < 0:
            raise ValueError(f"negative seek position {offset}")
        if offset != self.pos:
            self._close_resp()
            self._buf = b""
            self.pos = offset
        return self.pos

    def _sleep(self, attempt: int, retry_after: str | None = None) -> None:
        delay = self.backoff_s * (2 ** attempt)
        if retry_after:
            try:
                delay = max(delay, min(float(retry_after), MAX_RETRY_AFTER_S))
            except ValueError:
                pass  # an HTTP-date Retry-After: the exponential delay will do
        time.sleep(delay)

    def _close_resp(self) -> None:
        if self._resp is not None:
            self._resp.close()
        self._resp = self._chunks = None

    def _connect(self) -> None:
        """Open (or reopen at self.pos) the stream, retrying transient failures."""
        import httpx

        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                log.warning("retrying %s at byte %d (attempt %d/%d): %s",
                            self.url, self.pos, attempt, self.retries, last)
            headers = {"Range": f"bytes={self.pos}-"} if self.pos else {}
            try:
                resp = self._send(headers)
            except httpx.TransportError as e:
                last = f"{type(e).__name__}: {e}"
                if attempt < self.retries:
                    self._sleep(attempt)
                continue
            code = resp.status_code
            if code in (200, 206):
                self._attach(resp)
                return
            resp.close()
            if code == 416 and self.size is not None and self.pos >= self.size:
                self._chunks = iter(())
                return
            if code in (401, 403):
                raise StageError(f"{self.url}: HTTP {code} forbidden (no access to this object)")
            if code == 404:
                raise StageError(f"{self.url}: HTTP 404 not found")
            if code not in TRANSIENT_STATUS:
                raise StageError(f"{self.url}: HTTP {code}")
            last = f"HTTP {code}"
            if attempt < self.retries:
                self._sleep(attempt, resp.headers.get("retry-after"))
        raise StageError(f"{self.url}: gave up after {self.retries + 1} attempts ({last})")

    def _send(self, headers: dict[str, str]):
        """GET self.url, following redirects hop by hop; StageError for a refused or endless chain."""
        from urllib.parse import urljoin, urlsplit

        from pipeline.acquire.web import private_address

        url = self.url
        for _ in range(MAX_REDIRECTS + 1):
            resp = self._client.send(self._client.build_request("GET", url, headers=headers), stream=True)
            if not resp.is_redirect:
                return resp
            resp.close()
            try:
                nxt = urljoin(url, resp.headers.get("location", ""))
                p = urlsplit(nxt)
                p.port  # noqa: B018 - raises ValueError for a port out of range
            except ValueError:
                raise StageError(f"{self.url}: redirect to a malformed URL from {url}") from None
            if p.scheme not in ("http", "https") or not p.hostname:
                raise StageError(f"{self.url}: redirect to a non-http URL {nxt!r}")
            ip = None if self.allow_private_redirects else private_address(p.hostname)
            if ip:
                raise StageError(f"{self.url}: redirect to {nxt} refused: {p.hostname} resolves to the "
                                 f"non-public address {ip} (allow_private_redirects=True to allow)")
            url = nxt
        raise StageError(f"{self.url}: more than {MAX_REDIRECTS} redirects")

    def _attach(self, resp) -> None:
        if resp.status_code == 206:
            start, total = _content_range(resp.headers.get("content-range", ""))
            if total is not None:
                self.size = total
            if start != self.pos:
                resp.close()
                raise StageError(f"{self.url}: server resumed at byte {start}, asked for {self.pos}")
            skip = 0
        else:
            # Full body again (the first request, or a server that ignores Range): skip
            # what the reader already has.
            skip = self.pos
            length = resp.headers.get("content-length")
            if length and length.isdigit():
                self.size = int(length)
        self._resp = resp
        # No chunk size: httpx then yields each network read at once, so the bytes
        # received before a connection breaks are kept and the resume starts after them.
        self._chunks = resp.iter_raw()
        while skip > 0:
            chunk = next(self._chunks, b"")
            if not chunk:
                raise StageError(f"{self.url}: body shorter on retry than the {self.pos} bytes read before")
            if len(chunk) > skip:
                self._buf = chunk[skip:]
            skip -= len(chunk)

    def _next_chunk(self) -> bytes:
        """The next non-empty chunk, or b"" at a complete end of body."""
        import httpx

        failures = 0
        while True:
            try:
                chunk = next(self._chunks, b"")
                if chunk:
                    return chunk
                if self.size is not None and self.pos < self.size:
                    raise httpx.RemoteProtocolError(
                        f"body ended at byte {self.pos} of {self.size}")
                return b""
            except (httpx.TransportError, httpx.StreamError) as e:
                failures += 1
                self.reconnects += 1
                self._close_resp()
                if failures > self.retries:
                    raise StageError(f"{self.url}: stream failed at byte {self.pos} "
                                     f"after {self.retries} retries: {e}") from None
                log.warning("%s: stream broke at byte %d (%s); resuming", self.url, self.pos, e)
                self._sleep(failures - 1)
                self._connect()
                if self._buf:
                    chunk, self._buf = self._buf, b""
                    return chunk

    def readinto(self, b) -> int:
        if self.closed:
            raise ValueError("I/O operation on closed file")
        if self._chunks is None and not self._buf:
            self._connect()
        if not self._buf:
            self._buf = self._next_chunk()
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        self.pos += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._close_resp()
            self._client.close()
        super().close()


def _content_range(content_range: str) -> tuple[int, int | None]:
    """`bytes 100-199/200` -> (100, 200); total is None when unknown (`*`)."""
    try:
        span, _, total = content_range.split()[1].partition("/")
        return int(span.split("-")[0]), int(total) if total.isdigit() else None
    except (IndexError, ValueError):
        return -1, None


def open_remote(url: str, retries: int = 3, backoff_s: float = 1.0, timeout_s: float = 30,
                allow_private_redirects: bool = False):
    """A binary, buffered, read-only file object streaming `url` (http, https or s3).

    Raises StageError for 401/403/404 and other permanent failures, or once
    `retries` consecutive attempts have failed; ValueError for an unsupported scheme.
    """
    if retries < 0:
        raise ValueError(f"retries must be >= 0, got {retries}")
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("http", "https"):
        return io.BufferedReader(_HTTPStream(url, retries, backoff_s, timeout_s,
                                             allow_private_redirects=allow_private_redirects), CHUNK)
    if scheme in ("s3", "s3a"):
        return _open_s3(url, retries, backoff_s)
    raise ValueError(f"open_remote: unsupported URL scheme in {url!r} (use http://, https:// or s3://)")


def _open_s3(url: str, retries: int, backoff_s: float):
    try:
        import s3fs  # noqa: F401 - fsspec needs it for s3://
    except ImportError:
        raise StageError(
            f"{url}: reading s3:// needs the s3fs package (`pip install s3fs`), "
            "or use the HTTPS endpoint (cc_base_url=https://data.commoncrawl.org/)"
        ) from None
    import fsspec

    last: Exception | None = None
    for attempt in range(retries + 1):
        try:
            # Common Crawl's bucket is public: anonymous access needs no credentials.
            fs, path = fsspec.core.url_to_fs(url, anon=url.startswith("s3://commoncrawl/"))
            return fs.open(path, "rb", block_size=8 << 20)
        except FileNotFoundError:
            raise StageError(f"{url}: not found") from None
        except PermissionError:
            raise StageError(f"{url}: forbidden (no access to this object)") from None
        except OSError as e:
            last = e
            if attempt < retries:
                time.sleep(backoff_s * (2 ** attempt))
    raise StageError(f"{url}: gave up after {retries + 1} attempts ({last})")
