"""The polite crawler against two fixture sites on 127.0.0.1, on the shared local Ray."""

from __future__ import annotations

import json

import pytest
from helpers.http_server import FixtureServer, Route

from pipeline.acquire.crawler import CrawlConfig, crawl_seeds, run
from pipeline.acquire.politeness import Robots
from pipeline.acquire.web import extract_links, normalise_url


def _page(title: str, *links: str) -> bytes:
    items = "".join(f'<li><a href="{h}">{h}</a></li>' for h in links)
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1><ul>{items}</ul></body></html>".encode()


def test_robots_fractional_crawl_delay_and_groups():
    text = "User-agent: other\nDisallow: /\n\nUser-agent: *\nDisallow: /private\nCrawl-delay: 0.25\n"
    r = Robots.parse(text, "d2d-bot/0.1 (+x)")
    assert r.crawl_delay == 0.25
    assert not r.allowed("http://h/private/a") and r.allowed("http://h/public")
    assert not Robots.parse(text, "other/1.0").allowed("http://h/public")
    assert Robots.from_response(404, "", "d2d-bot").allowed("http://h/x")
    assert not Robots.from_response(503, "", "d2d-bot").allowed("http://h/x")


def test_link_extraction_resolves_base_and_skips_nofollow():
    html = ('<base href="/docs/"><a href="a.html#top">a</a><a href="mailto:x@y">m</a>'
            '<a rel="nofollow" href="/n">n</a><a href="HTTP://Other.ORG:8080/p">o</a><a href="a.html">dup</a>')
    assert extract_links(html, "http://h/x/y") == ["http://h/docs/a.html", "http://other.org:8080/p"]
    assert extract_links('<meta name="robots" content="noindex,nofollow"><a href="/a">a</a>', "http://h/") == []
    assert normalise_url("javascript:void(0)") is None


@pytest.fixture
def sites():
    big = b"<html><body>" + b"x" * 20_000 + b"</body></html>"
    with FixtureServer() as a, FixtureServer() as b:
        a.routes.update({
            "/robots.txt": Route(b"User-agent: *\nDisallow: /private\nCrawl-delay: 0.2\n", content_type="text/plain"),
            "/": Route(_page("home", "/a", "/private/x", "/missing", "/broken", "/slow", "/file.pdf", "/big",
                             "/old", "http://example.com/", b.url + "elsewhere")),
            "/a": Route(_page("a", "/a/deep")),
            "/a/deep": Route(_page("deep", "/a/deeper")),
            "/a/deeper": Route(_page("too deep")),
            "/private/x": Route(_page("secret")),
            "/broken": Route(b"oops", status=500, content_type="text/plain"),
            "/slow": Route(_page("slow"), stall_s=1.5),
            "/file.pdf": Route(b"%PDF-1.4", content_type="application/pdf"),
            "/big": Route(big),
            "/old": Route(b"", status=301, headers={"Location": "/new"}),
            "/new": Route(_page("new")),
        })
        b.routes.update({"/": Route(_page("b", "/b1")), "/b1": Route(_page("b1")),
                         "/elsewhere": Route(_page("not linked within b"))})
        yield a, b


def _log(run_dir) -> dict[str, dict]:
    rows = [json.loads(ln) for ln in (run_dir / "crawl" / "fetch_log.jsonl").read_text().splitlines()]
    return {r["url"]: r for r in rows}


def test_crawl_is_polite_and_records_every_outcome(ray_local, sites, run_dir, tmp_path):
    a, b = sites
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(f"# fixture sites\n{a.url}\n{b.url}\nnot a url\n")
    cfg = CrawlConfig(seeds=str(seeds), run_dir=str(run_dir), max_depth=2, per_host_delay_s=0.0,
                      timeout_s=0.5, max_page_bytes=10_000, user_agent="d2d-test/1.0", allow_private_hosts=True)
    out = run(cfg)
    log = _log(run_dir)
    reason = {u.replace(a.url, "/"): r["reason"] for u, r in log.items() if u.startswith(a.url)}
    assert reason == {"/": "ok", "/a": "ok", "/a/deep": "ok", "/private/x": "robots", "/missing": "http_404",
                      "/broken": "http_500", "/slow": "timeout", "/file.pdf": "non_html", "/big": "too_large",
                      "/old": "redirect", "/new": "ok"}
    assert log["not a url"]["reason"] == "bad_seed"
    assert not a.hits("/private/x") and not a.hits("/a/deeper")
    assert {h.path for h in b.log} == {"/robots.txt", "/", "/b1"}  # /elsewhere: a's link, other host
    assert all(h.headers["User-Agent"] == "d2d-test/1.0" for h in a.log + b.log)
    starts = sorted(h.t for h in a.log)
    assert min(t2 - t1 for t1, t2 in zip(starts, starts[1:], strict=False)) >= 0.19  # Crawl-delay 0.2, server clock
    assert out["by_reason"]["ok"] == 6 and out["pages_kept"] == 6

    from warcio.archiveiterator import ArchiveIterator

    types, responses = [], {}
    for path in [p for p in out["artifacts"] if p.endswith(".warc.gz")]:
        with open(path, "rb") as f:
            for rec in ArchiveIterator(f):
                types.append(rec.rec_type)
                if rec.rec_type == "response":
                    responses[rec.rec_headers.get_header("WARC-Target-URI")] = rec.content_stream().read()
    assert types.count("request") == types.count("response") == 6
    assert responses[a.url + "a"] == a.routes["/a"].body
    assert set(responses) == {u for u, r in log.items() if r["reason"] == "ok"}


def test_page_limit_through_the_cli_and_crawl_seeds(ray_local, sites, run_dir, tmp_path, capsys):
    from cluster.cli import main

    a, _ = sites
    seeds = tmp_path / "seeds.txt"
    seeds.write_text(a.url + "\n")
    assert main(["crawl", "--seeds", str(seeds), "--run-dir", str(run_dir), "--max-pages", "3",
                 "--per-host-delay-s", "0", "--no-obey-robots", "--timeout-s", "0.5", "--allow-private-hosts"]) == 0
    assert json.loads(capsys.readouterr().out)["requests"] == 3
    assert len(_log(run_dir)) == 3 and not a.hits("/robots.txt")
    warcs = crawl_seeds(seeds, run_dir / "again", {"max_depth": 0, "per_host_delay_s": 0.0,
                                                          "allow_private_hosts": True})
    assert len(warcs) == 1 and list(_log(run_dir / "again")) == [a.url]


def test_config_rejects_bad_values_naming_the_field():
    for field, value in [("max_pages", 0), ("max_depth", -1), ("timeout_s", 0), ("per_host_concurrency", 0)]:
        with pytest.raises(ValueError, match=field):
            CrawlConfig(**{field: value})
