"""Acquisition feeding curation: a crawl's WARCs and a cc:// listing through `d2d curate`."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest
from helpers.http_server import FixtureServer, Route

from pipeline.acquire.democrawl import generate_pages, write_demo_crawl


@pytest.mark.slow
def test_crawl_and_cc_inputs_through_curate(ray_local, run_dir, tmp_path, capsys):
    from cluster.cli import main

    warcs = write_demo_crawl(tmp_path / "demo", n_pages=20, seed=3, pages_per_file=20)
    cc_path = "crawl-data/CC-MAIN-TEST/segments/1.1/warc/demo-00000.warc.gz"
    listing = gzip.compress(f"{cc_path}\n".encode())
    # The crawled site serves other demo articles, linked in a chain from its home page.
    articles = [p for p in generate_pages(60, seed=11) if p["category"] == "english"][:3]
    routes = {
        "/crawl-data/CC-MAIN-TEST/warc.paths.gz": Route(listing, content_type="application/gzip"),
        "/" + cc_path: Route(open(warcs[0], "rb").read(), content_type="application/octet-stream", cut_times=1),
        "/robots.txt": Route(b"User-agent: *\nDisallow: /crawl-data/\n", content_type="text/plain"),
    }
    for i, page in enumerate(articles):
        link = f'<a href="/article/{i + 1}">next</a>' if i + 1 < len(articles) else ""
        routes["/" if i == 0 else f"/article/{i}"] = Route(page["html"].replace("</article>", link + "</article>").encode())
    with FixtureServer(routes) as srv:
        seeds = tmp_path / "seeds.txt"
        seeds.write_text(srv.url + "\n")
        # The seeds file goes straight to curate, which crawls it into RUN/crawl/ first.
        argv = ["curate", "--config", "tiny", "--input", f"cc://CC-MAIN-TEST?segments=1,{seeds}",
                "--set", f"cc_base_url={srv.url}", "--set", "fetch_backoff_s=0.01", "--run-dir", str(run_dir),
                "--set", 'crawl={"per_host_delay_s": 0.0, "max_depth": 5, "allow_private_hosts": true}']
        assert main(argv) == 0, capsys.readouterr().err
        assert len(srv.hits("/" + cc_path)) == 2  # cut mid-stream once, resumed
        assert len(list((run_dir / "crawl").glob("*.warc.gz"))) == 1
    table = pq.ParquetDataset(sorted(str(p) for p in (run_dir / "curated").glob("*.parquet"))).read().to_pydict()
    urls = set(table["url"])
    assert {u for u in urls if u.startswith(srv.url)} == {srv.url.rstrip("/") + "/"} | {
        f"{srv.url}article/{i}" for i in range(1, len(articles))}
    manifest = [json.loads(ln) for ln in (tmp_path / "demo" / "manifest.jsonl").read_text().splitlines()]
    kept = {m["url"]: m for m in manifest if m["url"] in urls}
    assert kept and {m["category"] for m in kept.values()} <= {"english", "pii", "near_dup", "exact_dup"}
    text = "\n".join(table["text"])
    assert not any(m["pii"]["email"] in text or m["pii"]["card"] in text for m in manifest if m["pii"])
