"""The demo sample crawl: deterministic, readable WARC, every planted category present."""

from __future__ import annotations

import hashlib
import json
import re

from warcio.archiveiterator import ArchiveIterator

from pipeline.acquire.democrawl import generate_pages, write_demo_crawl


def _digest(paths):
    return [hashlib.sha256(open(p, "rb").read()).hexdigest() for p in paths]


def test_same_seed_same_bytes_other_seed_other_pages(tmp_path):
    a = write_demo_crawl(tmp_path / "a", n_pages=120, seed=7, pages_per_file=50)
    b = write_demo_crawl(tmp_path / "b", n_pages=120, seed=7, pages_per_file=50)
    assert len(a) == 3 and _digest(a) == _digest(b)
    assert (tmp_path / "a" / "manifest.jsonl").read_bytes() == (tmp_path / "b" / "manifest.jsonl").read_bytes()
    other = [p["html"] for p in generate_pages(120, seed=8)]
    assert other != [p["html"] for p in generate_pages(120, seed=7)]


def test_every_planted_category_is_in_the_warc(tmp_path):
    paths = write_demo_crawl(tmp_path, n_pages=300, seed=0)
    manifest = [json.loads(ln) for ln in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    responses = {}
    for p in paths:
        with open(p, "rb") as f:
            for rec in ArchiveIterator(f):
                if rec.rec_type == "response":
                    assert rec.http_headers.get_statuscode() == "200"
                    responses[rec.rec_headers.get_header("WARC-Target-URI")] = rec.content_stream().read().decode()
    assert list(responses) == [m["url"] for m in manifest]
    by_cat: dict[str, list[dict]] = {}
    for m in manifest:
        by_cat.setdefault(m["category"], []).append(m)
    assert set(by_cat) == {"english", "pii", "spam", "adult", "foreign", "exact_dup", "near_dup"}
    assert len(by_cat["english"]) + len(by_cat["pii"]) >= 150
    assert {m["lang"] for m in by_cat["foreign"]} == {"de", "fr", "es", "zh"}
    assert all(re.search(r"xxx|porn|sex", m["url"]) for m in by_cat["adult"])
    page = responses[by_cat["english"][0]["url"]]
    assert all(s in page for s in ("<nav>", "cookie policy", "<footer>"))
    for m in by_cat["pii"]:
        pii = m["pii"]
        assert all(pii[k] in responses[m["url"]] for k in ("person", "email", "phone", "card"))
        digits = [int(c) for c in pii["card"].replace(" ", "")]
        assert sum(d if i % 2 == 0 else (2 * d - 9 if d > 4 else 2 * d) for i, d in enumerate(reversed(digits))) % 10 == 0
    for m in by_cat["exact_dup"]:
        assert responses[m["url"]] == responses[m["duplicate_of"]] and m["url"] != m["duplicate_of"]
    for m in by_cat["near_dup"]:
        assert responses[m["url"]] != responses[m["duplicate_of"]]


def test_english_articles_look_like_good_web_text():
    stop = {"the", "be", "to", "of", "and", "that", "have", "with"}
    for page in (p for p in generate_pages(200, seed=1) if p["category"] == "english"):
        text = " ".join(page["paragraphs"])
        words = text.split()
        assert len(words) >= 50 and sum(w.lower() in stop for w in words) >= 2
        assert all(par.rstrip()[-1] in ".!?" for par in page["paragraphs"])
        ngrams = [" ".join(words[i:i + 5]) for i in range(len(words) - 4)]
        assert len(set(ngrams)) / len(ngrams) > 0.95
