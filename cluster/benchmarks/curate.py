"""`d2d bench curate`: MinHash throughput vs datasketch, LSH precision/recall on planted near-duplicates,
per-step docs/s on real pages, extraction quality against known main content, PII docs/s and quality.

    .venv/bin/d2d bench curate --run-dir bench

Pair-level figures use the same signatures and band keys as the Ray path, grouped
in-process, against brute-force shingle Jaccard at 0.8. Document-level figures run
the real Ray dedup (`pipeline.curate.dedup`) on the same corpus and compare the
documents it drops with the ones brute force would drop (all but the smallest key
of every connected group of pairs at Jaccard >= 0.8), and time it. Extraction quality is
word-level precision/recall/F1 of each extractor against the known title and paragraphs of
generated pages (no real pages with gold text are at hand). PII throughput is on 1 KB
documents in actor-sized batches; its quality is PERSON/LOCATION span precision/recall on
Presidio's labelled sentences and on articles with planted names.
"""

from __future__ import annotations

import glob
import gzip
import html
import json
import random
import re
import time
from collections import Counter
from itertools import combinations
from pathlib import Path

from pipeline.curate.minhash import MinHasher, band_matrix, jaccard, shingles

WEB = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "web"


def planted_corpus(n_base: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    # Letters only: normalisation maps digits to 0, so "w17" and "w42" would be one word.
    letters = "abcdefghijklmnopqrstuvwxyz"
    vocab = sorted({"".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(5000)})
    docs = []
    for _ in range(n_base):
        base = [rng.choice(vocab) for _ in range(300)]
        docs.append(" ".join(base))
        for rate in (0.005, 0.02, 0.1):
            docs.append(" ".join(w if rng.random() > rate else rng.choice(vocab) for w in base))
    return docs


def lsh_pairs(texts: list[str], bands=14, rows=8) -> set[tuple[int, int]]:
    sigs = MinHasher(bands * rows, 1, 5).signatures(texts)
    buckets: dict[int, list[int]] = {}
    for i, keys in enumerate(band_matrix(sigs, bands, rows)):
        for k in keys:
            buckets.setdefault(int(k), []).append(i)
    return {p for ids in buckets.values() for p in combinations(sorted(set(ids)), 2)}


def ray_dedup_figures(texts: list[str], truth: set[tuple[int, int]]) -> dict:
    """Documents the Ray dedup drops vs brute force, and its wall time."""
    from pipeline.curate.config import CurateConfig
    from pipeline.curate.dedup import run_dedup_standalone

    parent = list(range(len(texts)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in sorted(truth):
        a, b = root(i), root(j)
        parent[max(a, b)] = min(a, b)
    should = {i for i in range(len(texts)) if root(i) != i}
    t0 = time.perf_counter()
    kept = set(run_dedup_standalone(texts, CurateConfig(exact_dedup=False)))
    wall = time.perf_counter() - t0
    dropped = set(range(len(texts))) - kept
    hit = len(dropped & should)
    return {"dedup_doc_precision": round(hit / max(len(dropped), 1), 4), "dedup_doc_recall": round(hit / max(len(should), 1), 4),
            "ray_dedup_docs": len(texts), "ray_dedup_wall_s": round(wall, 2)}


WORD = re.compile(r"\w+")


def word_prf(pairs: list[tuple[str, str]]) -> dict:
    """Word-level precision, recall, F1 of extracted text against the known main content, micro-averaged
    over pages (bags of lower-cased words, as the article-extraction benchmarks score)."""
    hit = n_out = n_gold = 0
    for out, gold in pairs:
        o, g = Counter(w.lower() for w in WORD.findall(out)), Counter(w.lower() for w in WORD.findall(gold))
        hit, n_out, n_gold = hit + sum((o & g).values()), n_out + sum(o.values()), n_gold + sum(g.values())
    p, r = hit / max(n_out, 1), hit / max(n_gold, 1)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(p + r, 1e-9), 4)}


def div_soup_page(title: str, paragraphs: list[str], rng: random.Random) -> str:
    """A blog-style page without <main>/<article>: the post in nested divs, next to prose-like
    boilerplate (teasers of other posts, a byline, a comment thread, a newsletter blurb)."""
    from pipeline.acquire.demotext import english_article

    other = english_article(rng)[1]
    teasers = "".join(f'<div class="teaser"><a href="/t/{i}">{html.escape(s.split(". ")[0])}.</a></div>'
                      for i, s in enumerate(other[:4]))
    comments = "".join(f'<div class="comment"><span class="author">reader{i}</span><div class="comment-body">'
                       f'{html.escape(s.split(". ")[-1])}</div></div>' for i, s in enumerate(other[1:4]))
    body = "".join(f'<div class="para">{html.escape(p)}</div>' for p in paragraphs)
    return f"""<html><head><title>{html.escape(title)}</title></head><body>
<div id="top"><div class="menu"><a href="/">Home</a> | <a href="/blog">Blog</a> | <a href="/login">Log in</a></div></div>
<div id="wrap"><div id="left"><h4>Popular this week</h4>{teasers}</div>
<div id="content"><div class="post"><h2 class="post-title">{html.escape(title)}</h2>
<div class="post-meta">by admin on May 3, 2024 in Uncategorized | 3 comments</div>
<div class="entry">{body}</div><div class="share">Share this: Facebook Twitter Email Print</div></div>
<div id="comments"><h3>3 thoughts on this post</h3>{comments}</div></div>
<div id="right"><div class="widget"><h4>Newsletter</h4>Get our best stories delivered to your inbox every week.
Sign up now and never miss a post.</div></div></div>
<div id="footer">Copyright 2024. Powered by WordPress. All content is the property of its authors.</div></body></html>"""


def extraction_quality(quick: bool) -> dict:
    """Each extractor on real pages with gold snippets (pipeline.curate.extract_eval: trafilatura's benchmark
    pages in ../shared/data/web/extraction_dev, split by domain into "tune", where the default's signals were
    chosen, and "heldout"), all three in one run; and word-level scores against the known main content of
    generated pages: the demo crawl's layout (pipeline.acquire.democrawl.render_page) and a div-only blog
    layout with prose-like boilerplate (div_soup_page)."""
    from pipeline.acquire.democrawl import generate_pages
    from pipeline.acquire.demotext import english_article
    from pipeline.curate.extract import extract_html

    rng = random.Random(7)
    sets = {"demo_layout": [(p["html"], p["title"] + "\n" + "\n".join(p["paragraphs"]))
                            for p in generate_pages(100 if quick else 300, seed=3)
                            if p["category"] in ("english", "pii", "near_dup")]}
    soup = []
    for _ in range(50 if quick else 150):
        title, paragraphs, _topic = english_article(rng)
        soup.append((div_soup_page(title, paragraphs, rng), title + "\n" + "\n".join(paragraphs)))
    sets["div_layout"] = soup
    out: dict = {}
    for name, pages in sets.items():
        out[name] = {"pages": len(pages)}
        for extractor in ("resiliparse", "trafilatura"):
            t0 = time.process_time()
            texts = [extract_html(h, extractor) for h, _ in pages]
            cpu = time.process_time() - t0
            out[name][extractor] = {**word_prf(list(zip(texts, [g for _, g in pages], strict=True))),
                                    "docs_per_cpu_s": round(len(pages) / max(cpu, 1e-9), 1)}
    from pipeline.curate import extract_eval

    if extract_eval.DEV.exists():
        # quick: every 4th page, both splits still covered
        pages = extract_eval.load_pages()[::4 if quick else 1]
        out["dev_pages"] = extract_eval.evaluate(pages)
        print(extract_eval.table(out["dev_pages"]), flush=True)
    return {"extraction_quality": out}


def _overlap_prf(golds: list[list[tuple]], preds: list[list[tuple]], entity: str) -> dict:
    """Span-level: a prediction is right if it overlaps a gold span of its type, a gold span is found
    if a prediction of its type overlaps it."""
    def hits(a, b):
        return sum(any(t2 == entity and s2 < e1 and s1 < e2 for s2, e2, t2 in y)
                   for x, y in zip(a, b, strict=True) for s1, e1, t1 in x if t1 == entity)

    n_pred, n_gold = (sum(t == entity for x in z for *_, t in x) for z in (preds, golds))
    return {"precision": round(hits(preds, golds) / max(n_pred, 1), 3),
            "recall": round(hits(golds, preds) / max(n_gold, 1), 3), "predicted": n_pred, "gold": n_gold}


def pii_quality(redactor) -> dict:
    """PERSON / LOCATION precision and recall on Presidio's labelled sentences (../shared/data/pii, when
    present), and PERSON on generated articles with planted names (every other PERSON is a false one)."""
    from pipeline.acquire.democrawl import generate_pages

    def spans(texts):
        return [[(s, e, t) for s, e, t, _ in x] for x in redactor.spans_batch(texts)]

    out = {}
    labelled = WEB.parent / "pii" / "presidio_generated_small.json"
    if labelled.exists():
        rows = json.loads(labelled.read_text())
        golds = [[(s["start_position"], s["end_position"], s["entity_type"]) for s in r["spans"]] for r in rows]
        preds = spans([r["full_text"] for r in rows])
        out["presidio_generated_small"] = {e: _overlap_prf(golds, preds, e) for e in ("PERSON", "LOCATION")}
    pages = [p for p in generate_pages(300, seed=5) if p["category"] in ("english", "pii")]
    texts = [p["title"] + "\n" + "\n".join(p["paragraphs"]) for p in pages]
    golds = [[(m.start(), m.end(), "PERSON") for m in re.finditer(re.escape(p["pii"]["person"]), t)] if p["pii"] else []
             for p, t in zip(pages, texts, strict=True)]
    out["planted_names"] = {"PERSON": _overlap_prf(golds, spans(texts), "PERSON")}
    return out


def pii_docs(quick: bool) -> dict[str, list[str]]:
    """1 KB documents: generated prose, each opening with a name, an email and a phone number ("1kb"),
    and consecutive 1,000-character pieces of real Common Crawl text from ../shared/data/web/dolma
    ("1kb_cc", when present), whose many capitalised words leave the NER gate less to skip."""
    from pipeline.acquire.demotext import english_article

    rng = random.Random(1)
    docs = []
    for i in range(100 if quick else 300):
        _title, paragraphs, _topic = english_article(rng)
        docs.append((f"Contact Jane Roe{i} at jane{i}@example.com or (212) 555-{1000 + i}. " + " ".join(paragraphs))[:1000])
    sets = {"1kb": docs}
    cc = []
    for f in sorted(glob.glob(str(WEB / "dolma" / "*.json*.gz"))):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                text = json.loads(line).get("text", "")
                cc += [text[i:i + 1000] for i in range(0, len(text) - 999, 1000)]
    if cc:
        sets["1kb_cc"] = cc[:100] if quick else cc
    return sets


def pii_figures(quick: bool) -> dict:
    """PII docs/s in batches as the Ray actors get them: wall, and per core = documents per CPU-second
    of this one process (steadier than wall time on a shared box), for the default `pii_ner` ("presidio"),
    gated and full NER. Plus the share of characters that NER reads with `pii_ner=gated` and `window`,
    and PERSON/LOCATION quality for each NER mode."""
    from pipeline.curate.config import CurateConfig
    from pipeline.curate.pii import PIIRedactor, ner_ranges

    sets = pii_docs(quick)
    bs = CurateConfig().pii_batch_size
    out: dict = {f"pii_ner_{mode}_char_share_{k}": round(sum(e - s for d in docs for s, e, *_ in ner_ranges(d, mode))
                                                         / sum(map(len, docs)), 3)
                 for mode in ("gated", "window") for k, docs in sets.items()}
    for label, kw in (("regex", {"mode": "regex"}), ("presidio", {"ner": CurateConfig().pii_ner}),
                      ("presidio_gated", {"ner": "gated"}), ("presidio_full_ner", {"ner": "full"})):
        r = PIIRedactor(**kw)
        for key, docs in sets.items():
            r.redact_batch(docs[-bs:])  # model load and first-call set-up are not throughput
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(0, len(docs), bs):
                r.redact_batch(docs[i:i + bs])
            out[f"pii_{label}_docs_per_s_{key}"] = round(len(docs) / (time.perf_counter() - t0), 1)
            out[f"pii_{label}_docs_per_cpu_s_{key}"] = round(len(docs) / (time.process_time() - c0), 1)
        if label != "regex":
            out[f"pii_{label}_quality"] = pii_quality(PIIRedactor(entities=CurateConfig().pii_entities + ["LOCATION"], **kw))
    return out


def end_to_end(quick: bool) -> dict:
    """`d2d curate` (defaults, NER PII on) vs datatrove's FineWeb chain on the same WARCs in one run
    (cluster.benchmarks.curate_datatrove), when datatrove (the bench extra) and the dev pages are there."""
    import importlib.util

    from pipeline.curate import extract_eval, sidebyside

    if importlib.util.find_spec("datatrove") is None or not extract_eval.DEV.exists():
        return {"end_to_end": "skipped: needs datatrove (pip install -e .[bench]) and ../shared/data/web/extraction_dev"}
    res = sidebyside.side_by_side(rounds=1 if quick else 2, limit=60 if quick else None)
    print(f"  end to end: d2d {res['d2d_docs_per_s']} docs/s, datatrove {res['datatrove_docs_per_s']} docs/s, "
          f"ratio {res['d2d_vs_datatrove']} ({res['d2d_vs_datatrove_with_ray_start_stop']} with Ray start/stop)",
          flush=True)
    return {"end_to_end": res}


def run_bench(out_dir: str, quick: bool) -> dict:
    from datasketch import MinHash

    texts = planted_corpus(25 if quick else 100)
    sets = [shingles(t, 5) for t in texts]
    truth = {(i, j) for i, j in combinations(range(len(texts)), 2) if jaccard(sets[i], sets[j]) >= 0.8}
    found = lsh_pairs(texts)
    checked = {p for p in found if jaccard(sets[p[0]], sets[p[1]]) >= 0.8}
    tp = len(truth & found)
    t0 = time.perf_counter()
    MinHasher(112, 1, 5).signatures(texts)
    ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in sets:
        m = MinHash(num_perm=112, seed=1)
        for sh in s:
            m.update(sh)
    ref = time.perf_counter() - t0
    figures = {"lsh_precision_raw": round(tp / max(len(found), 1), 4), "near_dup_recall": round(tp / max(len(truth), 1), 4),
               "near_dup_precision_jaccard_check": round(len(truth & checked) / max(len(checked), 1), 4),
               "minhash_docs_per_s": round(len(texts) / ours, 1), "datasketch_docs_per_s": round(len(texts) / ref, 1),
               "minhash_speedup_vs_datasketch": round(ref / ours, 1),
               # One "reference" key for the whole target (cluster/bench.py): one entry per compared figure.
               "reference": {"minhash": "datasketch.MinHash.update per shingle, same docs, same run",
                             "extraction": "trafilatura precision mode, same dev pages, same run",
                             "end_to_end": "datatrove 0.10.1 FineWeb chain, same WARCs, same run (when installed)",
                             "filter_parity": "datatrove 0.10.1's Gopher, C4 and FineWeb filter classes, same documents"}}
    files = sorted(glob.glob(str(WEB / "**" / "*.warc.gz"), recursive=True))
    if files:
        from pipeline.curate.config import CurateConfig
        from pipeline.curate.run import filter_files

        t0 = time.perf_counter()
        kept, stats = filter_files(files, CurateConfig())
        wall = time.perf_counter() - t0
        figures["real_pages_docs_per_s_per_core_overall"] = round(stats["read"]["docs_out"] / wall, 1)
        figures["per_step_docs_per_cpu_s"] = {n: round(s["docs_in"] / s["cpu_s"], 1) for n, s in stats.items()
                                              if s.get("cpu_s", 0) > 0}
    figures.update(end_to_end(quick))
    figures.update(ray_dedup_figures(texts, truth))
    figures.update(extraction_quality(quick))
    figures.update(pii_figures(quick))
    figures.update(parity_figures(quick))
    return figures


def parity_figures(quick: bool) -> dict:
    """Keep/drop agreement of our Gopher, C4 and FineWeb filters with datatrove's own classes on real
    documents (the shared WARC/JSONL samples and the extraction dev pages)."""
    from pipeline.curate.parity import filter_parity, parity_corpus

    if not WEB.exists():
        return {}
    docs = parity_corpus(str(WEB), dev_every=8 if quick else 1)
    per = filter_parity(docs)
    return {"filter_parity": {"documents": len(docs), "min_rate": min(f["rate"] for f in per.values()),
                              **{name: f["rate"] for name, f in per.items()}}}
