"""Fetching one page politely and reading its links: the crawler's pure, Ray-free parts.

    .venv/bin/python -c "from pipeline.acquire.web import HostFetcher; \
f = HostFetcher('http://127.0.0.1:8080', user_agent='d2d-bot/0.1'); print(f.fetch('http://127.0.0.1:8080/'))"

`HostFetcher` owns everything about one host: its robots.txt, its pacing, one
HTTP connection pool. It never follows a redirect itself (the crawler decides
whether the target is a host it may contact) and never reads more than
`max_page_bytes` of a body. Every outcome is a `reason`, the words the fetch
log and the stage's counters use: ok, robots, robots_unavailable, redirect, http_404, http_500,
timeout, connection_error, non_html, too_large, decoded_too_large, bad_encoding, crawl_delay_too_long,
private_address (the host resolves to a loopback, private or link-local address and
`allow_private` is off), error:TYPE (anything else that went wrong with one page).
Bodies are read raw and decoded here with a cap (`pipeline.acquire.bounded`), so a
gzip or brotli bomb costs at most `max_page_bytes`; robots.txt is read up to
`ROBOTS_MAX_BYTES` (RFC 9309 asks crawlers to parse at least 500 KiB) and cut there.
"""

from __future__ import annotations

import codecs
import ipaddress
import socket
import time
from dataclasses import dataclass, field
from email.utils import formatdate
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit, urlunsplit

from pipeline.acquire.bounded import BodyDecoder, DecodedTooLarge
from pipeline.acquire.politeness import HostPacer, Robots

ROBOTS_MAX_BYTES = 512_000

#: Hop-by-hop and transfer headers: the stored payload is the decoded body, so the
#: originals are kept under X-Crawler-* names, as Common Crawl's WARCs do.
_TRANSFER_HEADERS = ("content-encoding", "content-length", "transfer-encoding")


def host_key(url: str) -> str:
    """`http://Example.com:80/x` -> `http://example.com:80`: one politeness unit."""
    p = urlsplit(url)
    try:
        port = p.port or (443 if p.scheme == "https" else 80)
    except ValueError:  # a port out of range: one bogus unit rather than a crash
        port = 0
    return f"{p.scheme}://{(p.hostname or '').lower()}:{port}"


def private_address(host: str) -> str | None:
    """The first address `host` resolves to that is not globally routable (loopback, private,
    link-local, CGNAT, multicast, reserved), or None. A host that does not resolve is None: the
    request then fails as connection_error, which is what it is."""
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        return None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%", 1)[0])
        if getattr(ip, "ipv4_mapped", None):
            ip = ip.ipv4_mapped
        if not ip.is_global or ip.is_multicast:
            return str(ip)
    return None


def normalise_url(url: str, base: str | None = None) -> str | None:
    """Absolute http(s) URL without fragment, lower-case host; None if not crawlable."""
    try:
        absolute = urljoin(base, url.strip()) if base else url.strip()
        absolute, _ = urldefrag(absolute)
        p = urlsplit(absolute)
        port = p.port  # raises ValueError for a port outside 0-65535
    except ValueError:
        return None
    if p.scheme not in ("http", "https") or not p.hostname:
        return None
    netloc = p.hostname.lower() + (f":{port}" if port else "")
    return urlunsplit((p.scheme, netloc, p.path or "/", p.query, ""))


class _LinkParser(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.base: str | None = None
        self.nofollow = False

    def handle_starttag(self, tag, attrs):
        a = {k: (v or "") for k, v in attrs}
        if tag == "a" and a.get("href") and "nofollow" not in a.get("rel", "").lower():
            self.links.append(a["href"])
        elif tag == "base" and a.get("href") and self.base is None:
            self.base = a["href"]
        elif tag == "meta" and a.get("name", "").lower() == "robots":
            self.nofollow |= "nofollow" in a.get("content", "").lower() or "none" in a.get("content", "").lower()


def extract_links(html: str, page_url: str) -> list[str]:
    """Followable absolute links of a page, in document order, without duplicates.

    Honours `<base href>`, `rel="nofollow"` and `<meta name="robots" content="nofollow">`.
    """
    parser = _LinkParser()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # noqa: BLE001 - malformed markup: keep the links read so far
        pass
    if parser.nofollow:
        return []
    base = urljoin(page_url, parser.base) if parser.base else page_url
    seen, out = set(), []
    for href in parser.links:
        url = normalise_url(href, base)
        if url and url not in seen:
            seen.add(url)
            out.append(url)
    return out


def _charset(content_type: str) -> str:
    """The declared charset if Python knows it, else utf-8 (a bogus label must not end the page)."""
    for part in content_type.split(";")[1:]:
        k, _, v = part.strip().partition("=")
        if k.lower() == "charset" and v:
            try:
                return codecs.lookup(v.strip("\"' ")).name
            except (LookupError, ValueError):
                return "utf-8"
    return "utf-8"


@dataclass
class FetchResult:
    url: str
    reason: str
    status: int | None = None
    content_type: str = ""
    location: str | None = None
    links: list[str] = field(default_factory=list)
    nbytes: int = 0
    seconds: float = 0.0
    waited_s: float = 0.0
    fetched_at: str = ""
    """HTTP-date of the request; with the records below only when the page is kept."""
    request_line: str = ""
    request_headers: list[tuple[str, str]] = field(default_factory=list)
    status_line: str = ""
    response_headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


class HostFetcher:
    """Fetches pages of one host: robots.txt first, then paced, size- and time-capped GETs."""

    def __init__(self, origin: str, *, user_agent: str, delay_s: float = 1.0, timeout_s: float = 10.0,
                 max_page_bytes: int = 2_000_000, content_types: tuple[str, ...] = ("text/html",),
                 max_crawl_delay_s: float = 30.0, robots: bool = True, robots_text: str | None = None,
                 allow_private: bool = False):
        import httpx

        self.origin = origin
        # Checked once per host actor, after DNS: the crawler only ever sends this host's URLs here.
        self.refused = None if allow_private else private_address(urlsplit(origin).hostname or "")
        self.user_agent = user_agent
        self.timeout_s = timeout_s
        self.max_page_bytes = max_page_bytes
        self.content_types = tuple(c.lower() for c in content_types)
        self.max_crawl_delay_s = max_crawl_delay_s
        self.client = httpx.Client(timeout=httpx.Timeout(timeout_s), follow_redirects=False,
                                   headers={"User-Agent": user_agent, "Accept-Encoding": "gzip, deflate, identity"})
        self.pacer = HostPacer(delay_s)
        self.robots_truncated = False
        if self.refused:
            self.robots = Robots.unavailable(user_agent, f"private address {self.refused}")
        elif not robots:
            self.robots = Robots.none(user_agent)
        elif robots_text is not None:
            self.robots = Robots.parse(robots_text, user_agent)
        else:
            self.robots = self._fetch_robots()
        if self.robots.crawl_delay is not None:
            self.pacer.set_delay(max(delay_s, self.robots.crawl_delay))

    def _fetch_robots(self) -> Robots:
        import httpx

        self.pacer.wait()
        started = time.monotonic()
        body, status = b"", None
        try:
            with self.client.stream("GET", self.origin + "/robots.txt") as r:
                status = r.status_code
                if 200 <= status < 300:
                    dec = BodyDecoder(r.headers.get("content-encoding", ""), ROBOTS_MAX_BYTES)
                    parts, size = [], 0
                    for chunk in r.iter_raw():
                        try:
                            parts.append(dec.feed(chunk))
                        except DecodedTooLarge:
                            self.robots_truncated = True
                            break
                        size += len(parts[-1])
                        if size >= ROBOTS_MAX_BYTES:
                            self.robots_truncated = True
                            break
                        if time.monotonic() - started > self.timeout_s:
                            return Robots.unavailable(self.user_agent, "robots.txt read timed out")
                    body = b"".join(parts)[:ROBOTS_MAX_BYTES]
        except httpx.HTTPError as e:
            return Robots.unavailable(self.user_agent, type(e).__name__)
        except Exception as e:  # noqa: BLE001 - a corrupt encoding or the like: no rules we can trust
            return Robots.unavailable(self.user_agent, f"{type(e).__name__} reading robots.txt")
        finally:
            self.pacer.done()
        if self.robots_truncated:
            body = body.rsplit(b"\n", 1)[0]  # a rule cut in half must not count
        return Robots.from_response(status, body.decode("utf-8", "replace"), self.user_agent)

    def robots_info(self) -> dict:
        return {"status": self.robots.status, "crawl_delay": self.robots.crawl_delay,
                "delay_s": self.pacer.delay_s, "text": self.robots.text, "truncated": self.robots_truncated,
                "refused": self.refused}

    def fetch(self, url: str) -> FetchResult:
        """One GET of `url` (on this host), classified; never raises for network trouble."""
        import httpx

        if self.refused:
            return FetchResult(url, "private_address", location=self.refused)
        if not self.robots.allowed(url):
            return FetchResult(url, "robots" if self.robots.status == "ok" else "robots_unavailable")
        if self.robots.crawl_delay is not None and self.robots.crawl_delay > self.max_crawl_delay_s:
            return FetchResult(url, "crawl_delay_too_long")
        waited = self.pacer.wait()
        started = time.monotonic()
        res = FetchResult(url, "ok", waited_s=waited, fetched_at=formatdate(usegmt=True))
        try:
            req = self.client.build_request("GET", url)
            resp = self.client.send(req, stream=True)
            try:
                self._read(req, resp, res, started)
            finally:
                resp.close()
        except httpx.TimeoutException:
            res.reason = "timeout"
        except httpx.HTTPError as e:
            res.reason = "connection_error"
            res.location = type(e).__name__
        except Exception as e:  # noqa: BLE001 - one bad page is counted, never the end of the crawl
            res.reason = f"error:{type(e).__name__}"
            res.location = str(e)[:200]
        finally:
            self.pacer.done()
        res.seconds = round(time.monotonic() - started, 4)
        if res.reason != "ok":
            res.body, res.request_headers, res.response_headers = b"", [], []
        return res

    def _read(self, req, resp, res: FetchResult, started: float) -> None:
        res.status = resp.status_code
        res.content_type = resp.headers.get("content-type", "")
        if resp.is_redirect:
            res.reason = "redirect"
            res.location = normalise_url(resp.headers.get("location", ""), res.url)
            return
        if resp.status_code >= 400 or resp.status_code < 200:
            res.reason = f"http_{resp.status_code}"
            return
        mime = res.content_type.split(";")[0].strip().lower()
        if mime not in self.content_types:
            res.reason = "non_html"
            return
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_page_bytes:
            res.reason, res.nbytes = "too_large", int(declared)
            return
        # Raw bytes, decoded here with a cap: httpx would expand each network read of a bomb whole.
        dec = BodyDecoder(resp.headers.get("content-encoding", ""), self.max_page_bytes)
        chunks, size = [], 0
        for chunk in resp.iter_raw():
            size += len(chunk)
            if size > self.max_page_bytes:
                res.reason, res.nbytes = "too_large", size
                return
            try:
                chunks.append(dec.feed(chunk))
            except DecodedTooLarge:
                res.reason, res.nbytes = "decoded_too_large", size
                return
            except Exception:  # noqa: BLE001 - zlib.error / brotli.error: a corrupt coding
                res.reason, res.nbytes = "bad_encoding", size
                return
            if time.monotonic() - started > self.timeout_s:
                res.reason = "timeout"  # a trickling server: the read timeout alone never fires
                return
        res.body = b"".join(chunks)
        res.nbytes = len(res.body)
        res.links = extract_links(res.body.decode(_charset(res.content_type), "replace"), res.url)
        p = urlsplit(res.url)
        res.request_line = f"GET {p.path or '/'}{'?' + p.query if p.query else ''} HTTP/1.1"
        res.request_headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in req.headers.raw]
        res.status_line = f"{resp.status_code} {resp.reason_phrase}".strip()
        res.response_headers = [
            (f"X-Crawler-{k}" if k.lower() in _TRANSFER_HEADERS else k, v)
            for k, v in ((k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.headers.raw)
        ] + [("Content-Length", str(res.nbytes))]

    def close(self) -> None:
        self.client.close()
