"""The demo's sample crawl: realistic WARC files with every case curation must handle.

    .venv/bin/python -m pipeline.acquire.democrawl runs/demo/democrawl --pages 400 --seed 0

Pages carry boilerplate (navigation, cookie banner, sidebar, footer) around their
content. Most are English articles on varied topics (text for the tokenizer and
pretraining to learn from); the rest are planted cases, each in the manifest with
its category: SEO spam, adult-looking domains, German/French/Spanish/Chinese pages,
exact duplicates (same HTML, other URL), near duplicates (a few words changed,
a sentence added) and English articles carrying a made-up person's name, email,
phone number and card number. Output: OUT/democrawl-NNNNN.warc.gz plus
OUT/manifest.jsonl (url, category, lang, duplicate_of, planted PII). Same seed,
same bytes (record ids and dates are derived from the seed).
"""

from __future__ import annotations

import argparse
import hashlib
import html
import io
import json
import random
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.acquire import demotext

#: Share of pages per planted category; the rest are clean English articles.
MIX = {"spam": 0.07, "adult": 0.04, "foreign": 0.12, "exact_dup": 0.05, "near_dup": 0.06, "pii": 0.08}
#: One site per topic, in sorted topic order (astronomy, cooking, cycling, gardening, ...).
SITES = ["blog.northstar-notes.org", "www.kitchen-table-stories.net", "www.twowheel-weekly.com",
         "www.greenleaf-journal.com", "www.wellbeing-daily.com", "www.oldtown-archive.org",
         "devnotes.quietbyte.io", "www.slow-travel-letters.com"]
SPAM_SITES = ["best-cheap-deals-4u.biz", "win-casino-bonus-now.top", "replica-watch-outlet.info"]
ADULT_SITES = ["hot-xxx-videos.com", "free-porn-tube.net", "sexy-cams-live.xxx"]
FOREIGN_SITES = {"de": "www.nachrichten-heute.de", "fr": "www.actualites-locales.fr",
                 "es": "www.noticias-del-dia.es", "zh": "www.bendi-xinwen.cn"}
_START = datetime(2024, 5, 20, 8, 0, tzinfo=timezone.utc)


def _slug(title: str) -> str:
    return "-".join("".join(c if c.isascii() and c.isalnum() else " " for c in title.lower()).split())[:60] or "page"


def render_page(title: str, paragraphs: list[str], site: str, lang: str = "en", rng: random.Random | None = None) -> str:
    """A full HTML page: head with scripts, nav, cookie banner, article, sidebar, footer."""
    rng = rng or random.Random(0)
    nav = "".join(f'<li><a href="/{s}/">{s.title()}</a></li>' for s in ["news", "topics", "about", "contact"])
    related = "".join(f'<li><a href="/archive/{rng.randint(1000, 9999)}">Read more</a></li>' for _ in range(4))
    body = "\n".join(f"<p>{html.escape(p)}</p>" for p in paragraphs)
    return f"""<!DOCTYPE html>
<html lang="{lang}"><head><meta charset="utf-8"><title>{html.escape(title)} - {site}</title>
<script>window.dataLayer=window.dataLayer||[];function gtag(){{dataLayer.push(arguments);}}</script>
<style>.cookie{{position:fixed;bottom:0}}</style></head>
<body><header><a class="logo" href="/">{site}</a><nav><ul>{nav}</ul></nav>
<form action="/search"><input name="q" placeholder="Search"></form></header>
<div class="cookie" id="cookie-banner">We use cookies to improve your experience. By continuing you accept our
cookie policy. <button>Accept all</button> <button>Settings</button></div>
<main><article><h1>{html.escape(title)}</h1><p class="byline">Posted {rng.randint(1, 28)} May 2024 · {rng.randint(3, 9)} min read</p>
{body}
</article><aside><h3>Related</h3><ul>{related}</ul><p>Subscribe to our newsletter!</p></aside></main>
<footer><p>© 2024 {site}. All rights reserved.</p><a href="/privacy">Privacy</a> · <a href="/terms">Terms</a>
· <a href="/imprint">Imprint</a></footer></body></html>
"""


def _near_dup(paragraphs: list[str], rng: random.Random) -> list[str]:
    """A few words swapped and one sentence appended: a typical syndicated copy."""
    paras = list(paragraphs)
    for _ in range(3):
        i = rng.randrange(len(paras))
        words = paras[i].split()
        j = rng.randrange(len(words))
        words[j] = rng.choice(["really", "quite", "often", "also", "indeed"])
        paras[i] = " ".join(words)
    paras[-1] += " This article was first published on a partner site and is reproduced with permission."
    return paras


def generate_pages(n_pages: int = 400, seed: int = 0) -> list[dict]:
    """The pages, in crawl order: dicts with url, title, paragraphs, html, category, lang, ...

    Pure and deterministic. Planted categories take their MIX share (at least one
    each once n_pages >= 20); duplicates copy earlier English articles.
    """
    if n_pages < 1:
        raise ValueError(f"n_pages must be at least 1, got {n_pages}")
    rng = random.Random(seed)
    counts = {k: max(1 if n_pages >= 20 else 0, round(v * n_pages)) for k, v in MIX.items()}
    cats = [c for c, k in counts.items() for _ in range(k)][:n_pages]
    cats += ["english"] * (n_pages - len(cats))
    # Duplicates need originals before them: shuffle, then move them after the first articles.
    rng.shuffle(cats)
    dups = [c for c in cats if c in ("exact_dup", "near_dup")]
    rest = [c for c in cats if c not in ("exact_dup", "near_dup")]
    cut = min(len(rest), max(1, len(rest) // 3))
    cats = rest[:cut] + sorted(dups + rest[cut:], key=lambda _: rng.random())
    pages: list[dict] = []
    articles: list[dict] = []
    for i, cat in enumerate(cats):
        page = {"category": cat, "lang": "en", "duplicate_of": None, "pii": None}
        if cat in ("english", "pii") or (cat in ("exact_dup", "near_dup") and not articles):
            page["category"] = cat if cat in ("english", "pii") else "english"
            title, paras, topic = demotext.english_article(rng)
            site = SITES[sorted(demotext.TOPICS).index(topic) % len(SITES)]
            if cat == "pii":
                pii = demotext.fake_pii(rng)
                extra = demotext.pii_sentences(pii)
                paras = paras[:1] + [paras[1] + " " + extra[0]] + paras[2:-1] + [paras[-1] + " " + extra[1]]
                page["pii"] = pii
        elif cat == "exact_dup":
            orig = rng.choice(articles)
            title, paras, site = orig["title"], orig["paragraphs"], rng.choice(SITES)
            page["duplicate_of"] = orig["url"]
        elif cat == "near_dup":
            orig = rng.choice(articles)
            title, paras, site = orig["title"], _near_dup(orig["paragraphs"], rng), rng.choice(SITES)
            page["duplicate_of"] = orig["url"]
        elif cat == "foreign":
            lang = rng.choice(sorted(demotext._FOREIGN))
            title, paras = demotext.foreign_article(rng, lang)
            site, page["lang"] = FOREIGN_SITES[lang], lang
        elif cat == "spam":
            title, paras = demotext.spam_page(rng)
            site = rng.choice(SPAM_SITES)
        else:  # adult: the domain gives it away; the text is an age gate and teaser lines
            title = "Adults only - verify your age"
            paras = ["You must be 18 or older to enter this site.", "Hot xxx videos updated daily, free access now."]
            site = rng.choice(ADULT_SITES)
        url = f"https://{site}/{i:05d}/{_slug(title)}"
        page.update(url=url, title=title, paragraphs=paras)
        if cat == "exact_dup":
            page["html"] = orig["html"]
        else:
            page["html"] = render_page(title, paras, site, page["lang"], random.Random(rng.random()))
        if page["category"] in ("english", "pii"):
            articles.append(page)
        pages.append(page)
    return pages


def _record_id(seed: int, n: int) -> str:
    return f"<urn:uuid:{uuid.UUID(bytes=hashlib.sha256(f'{seed}:{n}'.encode()).digest()[:16], version=4)}>"


def write_demo_crawl(out_dir: str | Path, n_pages: int = 400, seed: int = 0, pages_per_file: int = 200) -> list[str]:
    """Write the demo crawl as WARC files (warcinfo, request and response records) and a manifest.

    Returns the WARC paths. Deterministic: the same arguments give byte-identical files.
    """
    if pages_per_file < 1:
        raise ValueError(f"pages_per_file must be at least 1, got {pages_per_file}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pages = generate_pages(n_pages, seed)
    paths, n = [], 0
    for start in range(0, len(pages), pages_per_file):
        path = out / f"democrawl-{start // pages_per_file:05d}.warc.gz"
        with open(path, "wb") as f:
            w = WARCWriter(f, gzip=True)
            n += 1
            info = w.create_warcinfo_record(path.name, {"software": "data2dialogue democrawl", "seed": str(seed)})
            info.rec_headers.replace_header("WARC-Record-ID", _record_id(seed, n))
            info.rec_headers.replace_header("WARC-Date", _START.strftime("%Y-%m-%dT%H:%M:%SZ"))
            w.write_record(info)
            for k, page in enumerate(pages[start: start + pages_per_file], start):
                date = (_START + timedelta(seconds=7 * k)).strftime("%Y-%m-%dT%H:%M:%SZ")
                host, _, rest = page["url"].removeprefix("https://").partition("/")
                req_id, resp_id = _record_id(seed, 2 * k + 10), _record_id(seed, 2 * k + 11)
                req = w.create_warc_record(
                    page["url"], "request", payload=io.BytesIO(b""), length=0,
                    warc_headers_dict={"WARC-Date": date, "WARC-Record-ID": req_id},
                    http_headers=StatusAndHeaders(f"GET /{rest} HTTP/1.1", [
                        ("Host", host), ("User-Agent", "d2d-bot/0.1"), ("Accept", "text/html")], is_http_request=True))
                body = page["html"].encode("utf-8")
                resp = w.create_warc_record(
                    page["url"], "response", payload=io.BytesIO(body), length=len(body),
                    warc_headers_dict={"WARC-Date": date, "WARC-Record-ID": resp_id, "WARC-Concurrent-To": req_id},
                    http_headers=StatusAndHeaders("200 OK", [
                        ("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))),
                        ("Server", "nginx")], protocol="HTTP/1.1"))
                w.write_record(req)
                w.write_record(resp)
        paths.append(str(path))
    keep = ("url", "category", "lang", "duplicate_of", "pii", "title")
    (out / "manifest.jsonl").write_text("".join(json.dumps({k: p[k] for k in keep}) + "\n" for p in pages))
    return paths


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="write the demo sample crawl as WARC files")
    ap.add_argument("out_dir")
    ap.add_argument("--pages", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for p in write_demo_crawl(args.out_dir, args.pages, args.seed):
        print(p)


if __name__ == "__main__":
    main()
