"""Blocklists in the UT1 layout, word lists from a URL into a checksummed cache, and the content-safety score on real pages."""

from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pytest
from conftest import shared
from helpers.http_server import FixtureServer, Route

from pipeline.curate.blocklists import fetch_cached, load_domains
from pipeline.curate.config import CurateConfig
from pipeline.curate.filters import ContentSafetyFilter, URLFilter
from pipeline.errors import StageError

UT1 = {"adult/domains": "badsite.example\nsub.adult.example\n", "adult/urls": "",
       "phishing/domains": "# comment line\nphish-bank.example\n", "phishing/urls": "mixed.example/login.html\n",
       "gambling/domains": "casino-site.example\n"}


def _ut1_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for rel, text in UT1.items():
            data = text.encode()
            info = tarfile.TarInfo(f"blacklists/{rel}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _datatrove_words() -> bytes:
    """A real word list: the banned words FineWeb's URL filter uses, shipped in datatrove (Apache-2.0)."""
    import datatrove

    return (Path(datatrove.__file__).parent / "assets" / "banned_words.txt").read_bytes()


def test_ut1_folder_and_plain_files(tmp_path):
    for rel, text in UT1.items():
        (tmp_path / "ut1" / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "ut1" / rel).write_text(text)
    (tmp_path / "mine.txt").write_text("# ours\nmy-blocked.example\n")
    listed = load_domains([str(tmp_path / "ut1"), str(tmp_path / "mine.txt")], ["adult", "phishing"])
    assert listed == {"badsite.example": "adult", "sub.adult.example": "adult", "phish-bank.example": "phishing",
                      "mixed.example/login.html": "phishing", "my-blocked.example": "custom"}
    f = URLFilter([str(tmp_path / "ut1")], categories=["adult", "phishing"])
    assert f({"url": "http://www.badsite.example/x"}) == (False, "url_blocklisted_adult")
    assert f({"url": "https://a.b.sub.adult.example/"}) == (False, "url_blocklisted_adult")
    assert f({"url": "http://mixed.example/login.html"}) == (False, "url_blocklisted_phishing")
    assert f({"url": "http://mixed.example/about.html"}) == (True, "")
    assert f({"url": "http://casino-site.example/"}) == (True, "")  # gambling not asked for
    assert f({"url": "http://www.pornhub.com/"}) == (True, "")  # the demo list is only the default
    assert URLFilter()({"url": "http://www.pornhub.com/"}) == (False, "url_blocklisted_domain")


def test_url_sources_are_fetched_once_and_checksummed(tmp_path):
    archive, words = _ut1_tar(), _datatrove_words()
    with FixtureServer({"/ut1.tar.gz": Route(archive, content_type="application/gzip"),
                        "/en.txt": Route(words, content_type="text/plain")}) as srv:
        url, cache = srv.url + "ut1.tar.gz", str(tmp_path / "cache")
        f = URLFilter([url], categories=["adult"], cache_dir=cache)
        assert f({"url": "http://badsite.example/"}) == (False, "url_blocklisted_adult")
        URLFilter([url], categories=["adult"], cache_dir=cache)
        assert len(srv.hits("/ut1.tar.gz")) == 1  # the second load used the cache
        path = fetch_cached(url, cache)
        assert Path(path + ".sha256").read_text().strip() == hashlib.sha256(archive).hexdigest()
        Path(path).write_bytes(b"corrupted")  # a damaged copy fails its recorded hash: fetched again
        assert fetch_cached(url, cache) == path and Path(path).read_bytes() == archive
        assert len(srv.hits("/ut1.tar.gz")) == 2
        with pytest.raises(StageError, match="sha256"):
            fetch_cached(srv.url + "en.txt", cache, sha256="0" * 64)
        good = hashlib.sha256(words).hexdigest()
        safety = ContentSafetyFilter(word_files=[srv.url + "en.txt"], cache_dir=cache, sha256={srv.url + "en.txt": good})
        with pytest.raises(StageError, match="HTTP 404"):
            fetch_cached(srv.url + "missing.txt", cache)
    assert len(safety.words) > 200


def test_content_safety_score_on_real_pages(tmp_path):
    from pipeline.curate.extract import HtmlExtractor
    from pipeline.curate.readers import read_file

    words_file = tmp_path / "en.txt"
    words_file.write_bytes(_datatrove_words())
    (tmp_path / "adult").mkdir()
    (tmp_path / "adult" / "domains").write_text("example.com\n")
    safety = ContentSafetyFilter([str(tmp_path)], 0.005, word_files=[str(words_file)])
    ex, docs = HtmlExtractor(), []
    for rel in ("web/warcfile.warc.gz", "web/dolma/sample-0000.warc.gz", "web/dolma/cc_en_head-0091.jsonl.gz",
                "web/warcio/example.warc.gz"):
        docs += [d for d, _ in read_file(str(shared(rel)), 10_000_000) if d and ex(d)[0]]
    assert len(docs) >= 50
    verdicts = [(safety(d), d) for d in docs]
    assert all(0.0 <= d["safety_score"] <= 1.0 and d["badword_ratio"] >= 0 for _, d in verdicts)
    by_reason = {}
    for (_keep, reason), _ in verdicts:
        by_reason[reason] = by_reason.get(reason, 0) + 1
    assert by_reason.get("", 0) / len(docs) > 0.8  # ordinary crawl text passes
    # A real page's own host listed as adult is dropped with its category, score 1.
    listed = [d for (_, _r), d in verdicts if "example.com" in (d.get("url") or "")]
    assert listed and all(d["safety_score"] == 1.0 for d in listed)
    assert by_reason.get("unsafe_domain_adult") == len(listed)
    # The same real text with list words mixed in crosses the threshold.
    clean = next(d for (k, _r), d in verdicts if k and d["badword_ratio"] == 0)
    from pipeline.curate.filters import words

    n = len(words(clean["text"]))
    doc = {"url": "", "text": clean["text"] + " " + " ".join(["2g1c", "18abused"] * max(1, n // 100))}
    assert safety(doc) == (False, "badwords_ratio") and doc["safety_score"] == 1.0
    half = {"url": "", "text": clean["text"] + " 2g1c"}
    assert safety(half)[0] and 0 < half["safety_score"] < 1


def test_config_fields_fail_naming_the_field():
    with pytest.raises(ValueError, match="bad_words_files"):
        CurateConfig(bad_words_files=[""])
    with pytest.raises(ValueError, match="quality_label"):
        CurateConfig(quality_label="hq")
    with pytest.raises(ValueError, match="quality_top_fraction"):
        CurateConfig(quality_top_fraction=1.5)
