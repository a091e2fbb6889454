"""Hostile inputs to crawling and reading: bad charset, bad port, private targets, gzip/brotli bombs, huge robots.txt.

Every case must finish with a counted reason, in bounded memory (tracemalloc peaks, in-process).
"""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
import zlib

import pytest
from helpers.http_server import FixtureServer, Route

from pipeline.acquire.bounded import DecodedTooLarge, decode_body
from pipeline.acquire.crawler import CrawlConfig, run
from pipeline.acquire.fetch import open_remote
from pipeline.acquire.web import HostFetcher, normalise_url, private_address
from pipeline.curate import readers
from pipeline.errors import StageError

GB = 1 << 30


def _gzip_bomb() -> bytes:
    """~1 MB of gzip members that expand to 1 GiB of zeros."""
    member = gzip.compress(b"\0" * (1 << 20), 9)
    return member * 1024


def _brotli_bomb() -> bytes:
    """~1.6 KB of brotli that expands to 1 GiB of zeros, built without holding the 1 GiB."""
    import brotli

    c, zeros = brotli.Compressor(quality=5), b"\0" * (1 << 20)
    return b"".join(c.process(zeros) for _ in range(1024)) + c.finish()


@pytest.fixture(scope="module")
def bombs():
    return {"gzip": _gzip_bomb(), "br": _brotli_bomb()}


def _peak_mb(fn):
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


def test_decoder_round_trips_and_stops_bombs_at_the_cap(bombs):
    text = b"<p>hello world</p>\n" * 2000
    for enc, blob in [("gzip", gzip.compress(text)), ("deflate", zlib.compress(text)),
                      ("deflate", zlib.compress(text)[2:-4]), ("x-gzip", gzip.compress(text[:999]) + gzip.compress(text[999:]))]:
        assert decode_body([blob[i:i + 77] for i in range(0, len(blob), 77)], enc, 10**6) == text, enc
    assert decode_body([text], "zstd-unknown", 10**6) == text  # unknown coding: as stored
    for enc, blob in bombs.items():
        def decode(enc=enc, blob=blob):
            with pytest.raises(DecodedTooLarge):
                decode_body([blob[i:i + 65536] for i in range(0, len(blob), 65536)], enc, 2_000_000)
        _, peak = _peak_mb(decode)
        assert peak < 12, (enc, peak)  # 1 GiB of output never materialises


def test_bad_port_and_bad_charset_never_raise():
    assert normalise_url('http://h:99999/') is None
    assert normalise_url("/x", "http://h:99999/") is None
    from pipeline.acquire.web import _charset, extract_links

    assert _charset("text/html; charset=no-such-charset") == "utf-8"
    assert extract_links('<a href="http://h:99999/">x</a><a href="/ok">y</a>', "http://h/") == ["http://h/ok"]


@pytest.fixture
def hostile_site(bombs):
    huge_robots = b"User-agent: *\nDisallow: /private\n" + b"# padding\n" * 600_000  # 6 MB
    with FixtureServer() as srv:
        srv.routes.update({
            "/robots.txt": Route(huge_robots, content_type="text/plain"),
            "/": Route(b'<a href="/charset">c</a><a href="http://127.0.0.1:99999/">p</a><a href="/gz">g</a>'
                       b'<a href="/br">b</a><a href="/private/x">x</a><a href="/corrupt">z</a>'),
            "/charset": Route(b'<a href="/after">after</a>', content_type="text/html; charset=bogus-label-9"),
            "/after": Route(b"<p>the crawl went on</p>"),
            "/gz": Route(bombs["gzip"], headers={"Content-Encoding": "gzip"}),
            "/br": Route(bombs["br"], headers={"Content-Encoding": "br"}),
            "/corrupt": Route(b"\x1f\x8bnot gzip at all", headers={"Content-Encoding": "gzip"}),
            "/private/x": Route(b"secret"),
        })
        yield srv


def test_host_fetcher_sets_bombs_and_huge_robots_aside_in_bounded_memory(hostile_site):
    srv = hostile_site
    f, peak = _peak_mb(lambda: HostFetcher(srv.url.rstrip("/"), user_agent="d2d-test/1.0", delay_s=0,
                                           timeout_s=5, allow_private=True))
    try:
        info = f.robots_info()
        assert info["status"] == "ok" and info["truncated"] and len(info["text"]) <= 512_000
        assert peak < 20, peak  # 6 MB robots.txt, 512 KB read
        assert f.fetch(srv.url + "private/x").reason == "robots"  # the rules before the cut still hold
        for path, reason in [("gz", "decoded_too_large"), ("br", "decoded_too_large"), ("corrupt", "bad_encoding")]:
            res, peak = _peak_mb(lambda path=path: f.fetch(srv.url + path))
            assert res.reason == reason and res.body == b"", path
            assert peak < 12, (path, peak)
        res = f.fetch(srv.url + "charset")
        assert res.reason == "ok" and res.links == [srv.url + "after"]
    finally:
        f.close()


def test_private_hosts_are_refused_by_default(hostile_site):
    srv = hostile_site
    assert private_address("127.0.0.1") == "127.0.0.1" and private_address("localhost")
    assert private_address("169.254.169.254") and private_address("10.1.2.3") and private_address("::1")
    assert private_address("8.8.8.8") is None
    f = HostFetcher(srv.url.rstrip("/"), user_agent="d2d-test/1.0", delay_s=0)
    assert f.fetch(srv.url).reason == "private_address" and f.robots_info()["refused"] == "127.0.0.1"
    f.close()
    assert srv.log == []  # not even robots.txt was asked for


def test_crawl_counts_every_hostile_page_and_goes_on(ray_local, hostile_site, run_dir, tmp_path):
    srv = hostile_site
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(srv.url + "\n")
    out = run(CrawlConfig(seeds=str(seeds), run_dir=str(run_dir), per_host_delay_s=0.0, timeout_s=5,
                          allow_private_hosts=True))
    log = {r["url"]: r["reason"] for r in map(json.loads, (run_dir / "crawl" / "fetch_log.jsonl").read_text().splitlines())}
    assert log == {srv.url: "ok", srv.url + "charset": "ok", srv.url + "after": "ok",
                   srv.url + "gz": "decoded_too_large", srv.url + "br": "decoded_too_large",
                   srv.url + "corrupt": "bad_encoding", srv.url + "private/x": "robots"}
    assert out["by_reason"] == {"ok": 3, "decoded_too_large": 2, "bad_encoding": 1, "robots": 1}
    stats = json.loads((run_dir / "crawl" / "stats.json").read_text())
    assert list(stats["robots"].values())[0]["truncated"] is True

    # The default refuses the loopback host after resolving it: nothing is fetched, every URL is counted.
    hits_before = len(srv.log)
    out = run(CrawlConfig(seeds=str(seeds), run_dir=str(run_dir / "default"), per_host_delay_s=0.0))
    assert out["by_reason"] == {"private_address": 1} and out["pages_kept"] == 0
    assert len(srv.log) == hits_before


def test_open_remote_refuses_a_redirect_to_a_private_host():
    with FixtureServer() as srv:
        other = srv.url.replace("127.0.0.1", "localhost")
        srv.routes.update({"/data": Route(b"payload", content_type="application/octet-stream"),
                           "/hop": Route(b"", status=302, headers={"Location": other + "data"}),
                           "/loop": Route(b"", status=302, headers={"Location": "/loop"})})
        with pytest.raises(StageError, match="refused.*non-public address"):
            open_remote(srv.url + "hop", retries=0).read()
        with open_remote(srv.url + "hop", retries=0, allow_private_redirects=True) as f:
            assert f.read() == b"payload"
        with pytest.raises(StageError, match="more than 5 redirects"):
            open_remote(srv.url + "loop", retries=0, allow_private_redirects=True).read()
        assert not [h for h in srv.log if h.path == "/data" and h.headers.get("Host", "").startswith("127.")]


def _warc(path, records):
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as f:
        w = WARCWriter(f, gzip=True)
        for url, body, headers in records:
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), *headers], protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))


def test_readers_set_decompression_bombs_aside(bombs, tmp_path):
    good = b"<html><body><p>" + b"A fine sentence. " * 50 + b"</p></body></html>"
    warc = tmp_path / "bombs.warc.gz"
    _warc(warc, [("http://a.example/gz", bombs["gzip"], [("Content-Encoding", "gzip")]),
                 ("http://a.example/br", bombs["br"], [("Content-Encoding", "br")]),
                 ("http://a.example/ok", gzip.compress(good), [("Content-Encoding", "gzip")])])
    jsonl = tmp_path / "bomb.jsonl.gz"
    # One 64 MiB line (no newline inside the zeros; skipping it costs its decompression), then a good document.
    jsonl.write_bytes(_gzip_bomb()[: len(_gzip_bomb()) // 16] + gzip.compress(b'\n{"text": "a good line"}\n'))
    for label, read in [("fastwarc", lambda: list(readers.read_file(str(warc), 2_000_000))),
                        ("warcio", lambda: list(readers._read_warcio(open(warc, "rb"), str(warc), 2_000_000)))]:
        got, peak = _peak_mb(read)
        assert [r for _, r in got] == ["decoded_too_large", "decoded_too_large", ""], label
        assert got[2][0]["raw"] == good
        assert peak < 40, (label, peak)
    got, peak = _peak_mb(lambda: list(readers.read_file(str(jsonl), 2_000_000)))
    assert [r for _, r in got] == ["oversized", ""] and got[1][0]["raw"] == b"a good line"
    assert peak < 40, peak
