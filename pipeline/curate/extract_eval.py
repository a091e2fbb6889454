"""Extraction quality on real pages with gold snippets, scored the way trafilatura's own benchmark scores it.

    .venv/bin/python -m pipeline.curate.extract_eval                 # all extractors, both splits
    .venv/bin/python -m pipeline.curate.extract_eval --split tune    # development figures only

The pages are ../shared/data/web/extraction_dev (764 pages of trafilatura's extraction benchmark: html/*.html.gz
and evaldata_dev.json, which lists per URL `with` strings the extraction must keep and `without` strings,
boilerplate, it must drop). A `with` string found in the output is a true positive, one missing a false
negative; a `without` string found is a false positive. Precision, recall and F1 are over all strings of a
split. Whitespace runs are collapsed to one space in both the output and the strings, for every extractor
alike (extractors differ in where they break lines, not in what text they keep).

The pages are split by registered domain (sha1 of it, even -> "tune", odd -> "heldout"): extraction signals
and thresholds are chosen on "tune" only, and "heldout" is the figure to report.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import json
import os
import re
import time
from pathlib import Path

DEV = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "web" / "extraction_dev"
#: trafilatura precision mode, resiliparse main content without pruning, and the default.
EXTRACTORS = ("trafilatura", "resiliparse_plain", "resiliparse")
_WS = re.compile(r"\s+")


@functools.lru_cache(maxsize=1)
def _tld_extractor():
    import tldextract

    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def registered_domain(url: str) -> str:
    """example.co.uk for https://www.news.example.co.uk/x, from tldextract's bundled suffix list (no fetch)."""
    ext = _tld_extractor()(url)
    return ext.top_domain_under_public_suffix or ext.domain


def split_of(url: str) -> str:
    """"tune" or "heldout": a deterministic hash of the page's registered domain, so no site is in both."""
    return "tune" if hashlib.sha1(registered_domain(url).encode()).digest()[0] % 2 == 0 else "heldout"


def load_pages(dev: Path = DEV, split: str | None = None, limit: int | None = None) -> list[dict]:
    """[{url, html, with, without, split}] in URL order; `split` keeps one part only."""
    gold = json.loads((dev / "evaldata_dev.json").read_text())
    pages = []
    for url in sorted(gold):
        part = split_of(url)
        if split is not None and part != split:
            continue
        raw = gzip.open(dev / "html" / f"{gold[url]['file']}.gz").read()
        pages.append({"url": url, "raw": raw, "with": gold[url]["with"], "without": gold[url]["without"], "split": part})
        if limit is not None and len(pages) >= limit:
            break
    return pages


def snippet_counts(text: str, with_: list[str], without: list[str]) -> tuple[int, int, int, int]:
    """(true positives, false negatives, false positives, true negatives) of one page's output."""
    t = _WS.sub(" ", text)
    keep = [_WS.sub(" ", s).strip() in t for s in with_]
    leak = [_WS.sub(" ", s).strip() in t for s in without]
    return sum(keep), len(keep) - sum(keep), sum(leak), len(leak) - sum(leak)


def prf(counts: list[tuple[int, int, int, int]]) -> dict:
    tp, fn, fp, _tn = (sum(c[i] for c in counts) for i in range(4))
    p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / max(p + r, 1e-9), 3)}


def extract(raw: bytes, extractor: str) -> str:
    from pipeline.curate.extract import decode, extract_html

    html = decode(raw)
    if extractor == "resiliparse_plain":
        from resiliparse.extract.html2text import extract_plain_text

        return extract_plain_text(html, main_content=True, alt_texts=False, links=False, list_bullets=True)
    return extract_html(html, extractor)


def evaluate(pages: list[dict], extractors=EXTRACTORS) -> dict:
    """{extractor: {split: {precision, recall, f1, pages}, pages_per_cpu_s}} over `pages`, one run. Each
    page goes through every extractor back to back, so a change in the machine's load falls on all of them
    alike; pages/s is CPU time of this process (decoding included), steadier than wall time on a shared box."""
    cpu = dict.fromkeys(extractors, 0.0)
    texts: dict = {ex: [] for ex in extractors}
    for p in pages:
        for ex in extractors:
            t0 = time.process_time()
            texts[ex].append(extract(p["raw"], ex))
            cpu[ex] += time.process_time() - t0
    out: dict = {}
    for ex in extractors:
        row: dict = {}
        for part in sorted({p["split"] for p in pages}):
            sel = [i for i, p in enumerate(pages) if p["split"] == part]
            row[part] = {**prf([snippet_counts(texts[ex][i], pages[i]["with"], pages[i]["without"]) for i in sel]),
                         "pages": len(sel)}
        row["pages_per_cpu_s"] = round(len(pages) / max(cpu[ex], 1e-9), 1)
        out[ex] = row
    if "trafilatura" in out:
        base = out["trafilatura"]["pages_per_cpu_s"]
        for ex in out:
            out[ex]["speed_vs_trafilatura"] = round(out[ex]["pages_per_cpu_s"] / base, 2)
    return out


def table(result: dict) -> str:
    parts = sorted({k for r in result.values() for k in r if isinstance(r[k], dict)})
    head = "| extractor | " + " | ".join(f"{p} P / R / F1" for p in parts) + " | pages/CPU-s | vs trafilatura |"
    rows = [head, "|" + "---|" * (len(parts) + 3)]
    for ex, r in result.items():
        cells = [f"{r[p]['precision']:.3f} / {r[p]['recall']:.3f} / {r[p]['f1']:.3f}" for p in parts]
        rows.append(f"| {ex} | " + " | ".join(cells) + f" | {r['pages_per_cpu_s']} | {r.get('speed_vs_trafilatura', '')}× |")
    return "\n".join(rows)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--split", choices=("tune", "heldout"))
    ap.add_argument("--extractors", default=",".join(EXTRACTORS))
    args = ap.parse_args()
    os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
    res = evaluate(load_pages(split=args.split), args.extractors.split(","))
    print(table(res))
    print(f"load average: {os.getloadavg()}")
