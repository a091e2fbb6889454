"""`d2d bench curate`: MinHash throughput vs datasketch, LSH precision/recall on planted near-duplicates,
per-step docs/s on real pages.

    .venv/bin/d2d bench curate --run-dir bench

Pair-level figures use the same signatures and band keys as the Ray path, grouped
in-process, against brute-force shingle Jaccard at 0.8. Document-level figures run
the real Ray dedup (`pipeline.curate.dedup`) on the same corpus and compare the
documents it drops with the ones brute force would drop (all but the smallest key
of every connected group of pairs at Jaccard >= 0.8), and time it.
"""

from __future__ import annotations

import glob
import random
import time
from itertools import combinations
from pathlib import Path

from pipeline.curate.minhash import MinHasher, band_matrix, jaccard, shingles

#: datatrove's FineWeb chain on real ~110 KB pages on a 2-core box (issue 3), the end-to-end reference.
DATATROVE_DOCS_PER_S_PER_CORE = 16.0
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
                             "end_to_end": f"datatrove FineWeb chain ~{DATATROVE_DOCS_PER_S_PER_CORE} docs/s per core (issue 3)"}}
    files = sorted(glob.glob(str(WEB / "**" / "*.warc.gz"), recursive=True))
    if files:
        from pipeline.curate.config import CurateConfig
        from pipeline.curate.run import filter_files

        t0 = time.perf_counter()
        kept, stats = filter_files(files, CurateConfig())
        wall = time.perf_counter() - t0
        figures["real_pages_docs_per_s_per_core_overall"] = round(stats["read"]["docs_out"] / wall, 1)
        figures["end_to_end_vs_datatrove"] = round(figures["real_pages_docs_per_s_per_core_overall"]
                                                   / DATATROVE_DOCS_PER_S_PER_CORE, 2)
        figures["per_step_docs_per_s"] = {n: round(s["docs_in"] / s["seconds"], 1) for n, s in stats.items() if s["seconds"] > 0}
    figures.update(ray_dedup_figures(texts, truth))
    from pipeline.acquire.demotext import english_article
    from pipeline.curate.pii import PIIRedactor

    # 1 KB documents: prose with a name, an email and a phone number, different each time.
    rng = random.Random(1)
    docs = []
    for i in range(100):
        _title, paragraphs, _topic = english_article(rng)
        docs.append((f"Contact Jane Roe{i} at jane{i}@example.com or (212) 555-{1000 + i}. " + " ".join(paragraphs))[:1000])
    for mode, n in (("regex", 100), ("presidio", 50)):
        r = PIIRedactor(mode=mode)
        r.redact(docs[-1])  # model load and first-call set-up are not throughput
        t0 = time.perf_counter()
        for d in docs[:n]:
            r.redact(d)
        figures[f"pii_{mode}_docs_per_s_1kb"] = round(n / (time.perf_counter() - t0), 1)
    return figures
