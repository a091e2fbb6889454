"""Common Crawl inputs and resilient remote reads, against a local server on 127.0.0.1."""

from __future__ import annotations

import gzip

import pytest
from conftest import shared
from helpers.http_server import FixtureServer, Route

from pipeline.acquire.commoncrawl import parse_cc_uri, resolve_cc, select_paths
from pipeline.acquire.fetch import open_remote
from pipeline.errors import StageError

SEG = "crawl-data/CC-MAIN-TEST/segments/{}/warc/{}"


def _listing(paths: list[str]) -> bytes:
    return gzip.compress(("\n".join(paths) + "\n").encode())


def test_parse_rejects_bad_uris_naming_the_problem():
    for uri, needle in [
        ("s3://x", "cc://"),
        ("cc://?segments=1", "crawl id"),
        ("cc://CC MAIN?segments=1", "crawl id"),
        ("cc://CC-MAIN-TEST", "segments=N or files=N"),
        ("cc://CC-MAIN-TEST?segments=0", "segments"),
        ("cc://CC-MAIN-TEST?files=two", "files"),
        ("cc://CC-MAIN-TEST?segments=1&kind=wat", "kind"),
        ("cc://CC-MAIN-TEST?segment=1", "unknown option"),
    ]:
        with pytest.raises(ValueError, match=needle):
            parse_cc_uri(uri)
    spec = parse_cc_uri("cc://CC-MAIN-2024-22?segments=2&files=3&kind=WET")
    assert (spec.crawl_id, spec.kind, spec.segments, spec.files) == ("CC-MAIN-2024-22", "wet", 2, 3)
    assert spec.listing == "crawl-data/CC-MAIN-2024-22/wet.paths.gz"


def test_select_paths_takes_whole_segments_in_listing_order():
    paths = [SEG.format(s, f"f{i}.warc.gz") for s, i in [("a", 0), ("a", 1), ("b", 2), ("c", 3), ("c", 4)]]
    pick = lambda q: select_paths(paths, parse_cc_uri("cc://X?" + q))  # noqa: E731
    assert pick("segments=2") == paths[:3]
    assert pick("files=4") == paths[:4]
    assert pick("segments=3&files=2") == paths[:2]
    assert pick("segments=9") == paths


@pytest.fixture
def cc_site():
    """A crawl listing of the shared sample WARCs; the second file breaks mid-stream once."""
    names = ["warcfile.warc.gz", "whirlwind/whirlwind.warc.gz", "dolma/sample-0000.warc.gz"]
    files = {n: shared(f"web/{n}").read_bytes() for n in names}
    paths = [SEG.format("100.1", "warcfile.warc.gz"), SEG.format("100.1", "whirlwind.warc.gz"),
             SEG.format("200.2", "sample-0000.warc.gz")]
    routes = {
        "/crawl-data/CC-MAIN-TEST/warc.paths.gz": Route(_listing(paths), content_type="application/gzip"),
        "/crawl-data/CC-MAIN-TEST/wet.paths.gz": Route(_listing(["crawl-data/CC-MAIN-TEST/x.wet.gz"]),
                                                       fail_status=503, fail_times=1),
    }
    for p, n in zip(paths, names, strict=False):
        routes["/" + p] = Route(files[n], content_type="application/octet-stream")
    routes["/" + paths[1]].cut_times = 1
    with FixtureServer(routes) as srv:
        yield srv, paths, [files[n] for n in names]


def test_resolve_and_stream_with_a_mid_stream_failure(cc_site):
    srv, paths, blobs = cc_site
    urls = resolve_cc("cc://CC-MAIN-TEST?segments=1", srv.url)
    assert urls == [srv.url + p for p in paths[:2]]
    for url, blob in zip(urls, blobs, strict=False):
        with open_remote(url, retries=2, backoff_s=0.01, timeout_s=5) as f:
            assert f.read() == blob
    broken = srv.hits("/" + paths[1])
    assert len(broken) == 2 and broken[1].headers.get("Range") == f"bytes={len(blobs[1]) // 2}-"
    from warcio.archiveiterator import ArchiveIterator

    with open_remote(urls[0], backoff_s=0.01) as f:
        n = sum(1 for r in ArchiveIterator(f) if r.rec_type == "response")
    from fastwarc.warc import ArchiveIterator as FastIterator
    from fastwarc.warc import WarcRecordType

    with open_remote(urls[0], backoff_s=0.01) as f:  # fastwarc asks the stream for tell/seek
        assert n > 0 and n == sum(1 for _ in FastIterator(f, record_types=WarcRecordType.response))


def test_transient_status_is_retried_and_wet_listing_used(cc_site):
    srv, _, _ = cc_site
    urls = resolve_cc("cc://CC-MAIN-TEST?files=1&kind=wet", srv.url, backoff_s=0.01)
    assert urls == [srv.url + "crawl-data/CC-MAIN-TEST/x.wet.gz"]
    assert len(srv.hits("/crawl-data/CC-MAIN-TEST/wet.paths.gz")) == 2


def test_restart_without_range_support_skips_delivered_bytes(cc_site):
    srv, paths, blobs = cc_site
    route = srv.routes["/" + paths[0]]
    route.ranges, route.cut_times = False, 2
    with open_remote(srv.url + paths[0], retries=3, backoff_s=0.01) as f:
        assert f.read() == blobs[0]
    assert route.hits == 3


def test_permanent_errors_are_clear(cc_site):
    srv, _, _ = cc_site
    with pytest.raises(StageError, match=r"CC-MAIN-NOPE/warc.paths.gz: HTTP 404"):
        resolve_cc("cc://CC-MAIN-NOPE?segments=1", srv.url)
    srv.routes["/secret"] = Route(b"x", status=403)
    with pytest.raises(StageError, match="secret: HTTP 403"):
        open_remote(srv.url + "secret")
    srv.routes["/down"] = Route(b"x", fail_status=500, fail_times=99)
    with pytest.raises(StageError, match="gave up after 3 attempts"):
        open_remote(srv.url + "down", retries=2, backoff_s=0.01)
    assert srv.routes["/down"].hits == 3
    with pytest.raises(ValueError, match="scheme"):
        open_remote("ftp://127.0.0.1/x")
