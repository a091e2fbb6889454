"""Global dedup on Ray: exact (normalised text), then MinHash LSH with distributed connected components.

    .venv/bin/d2d curate --input '../shared/data/web/*.warc.gz' --run-dir runs/x   # runs this after the filters

One Ray Data pass computes, per document, its key, a hash of its normalised text
and its MinHash signature. From there on only those small numeric frames move,
through the task shuffles of `pipeline.curate.shuffle` (no text, no driver gather):

1. exact: partition by text hash; in each group the smallest doc key stays.
2. bands: the survivors' signatures cut into `minhash_bands` bucket keys.
3. edges: partition by bucket; each bucket links its documents to its smallest key (a star).
4. check (`jaccard_check`): keep an edge when the two signatures agree on at least
   `jaccard_threshold` of their slots (the MinHash estimate of their Jaccard), which
   removes LSH's chance collisions without touching text.
5. connected components: min-label propagation, the graph partitioned by node;
   every round is one wave of send tasks and one of update tasks, until no label moves.
6. decisions: a document whose component's smallest key is not itself is a near duplicate.

The keep rule is "smallest key wins" in both steps, so the result does not depend
on shard order or on how many nodes ran it. A sorted table of the decisions (only
documents that had a duplicate) goes to the object store once and a last Ray Data
pass marks every document with `_drop` and `dup_cluster_size`.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pandas as pd
import ray
from ray.data.expressions import col

from pipeline.curate.minhash import MinHasher, band_matrix, estimated_jaccard, normalize
from pipeline.curate.shuffle import concat, first_in_group, partition, reduce, split, take

KEEP, EXACT, NEAR = 0, 1, 2
REASONS = {EXACT: "exact_duplicate", NEAR: "near_duplicate"}


def text_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha1(normalize(text).encode()).digest()[:8], "little") & ((1 << 63) - 1)


def _keys(batch: pd.DataFrame, num_perm: int, seed: int, ngram: int) -> dict:
    """Ray Data batch function: doc_key, text_hash, text_bytes and the MinHash signature.
    A plain task, not an actor pool: the hasher costs microseconds to build."""
    texts = list(batch["text"])
    return {"doc_key": batch["doc_key"].to_numpy(np.int64),
            "text_hash": np.array([text_hash(t) for t in texts], np.int64),
            "text_bytes": np.array([len(t.encode()) for t in texts], np.int64),
            "sig": MinHasher(num_perm, seed, ngram).signatures(texts)}


def _exact_drops(g: dict) -> dict:
    """Keys (and bytes) of every document but the smallest key of each text hash."""
    if not g:
        return {}
    order = np.lexsort((g["doc_key"], g["text_hash"]))
    drop = order[~first_in_group(g["text_hash"][order])]
    return {"doc_key": g["doc_key"][drop], "text_bytes": g["text_bytes"][drop]}


def _survivors(keys: dict, drops: dict, bands: int, rows: int) -> tuple[dict, dict]:
    """(doc_key, sig) of the documents exact dedup kept, and their (doc_key, bucket) band rows."""
    if not keys:
        return {}, {}
    if drops:
        keys = take(keys, ~np.isin(keys["doc_key"], drops["doc_key"]))
    kept = {"doc_key": keys["doc_key"], "sig": keys["sig"]}
    buckets = band_matrix(keys["sig"], bands, rows)
    return kept, {"doc_key": np.repeat(keys["doc_key"], bands), "bucket": buckets.reshape(-1)}


def _star_edges(g: dict) -> dict:
    """Each bucket's documents linked to its smallest key; duplicate edges removed."""
    if not g:
        return {}
    order = np.lexsort((g["doc_key"], g["bucket"]))
    b, k = g["bucket"][order], g["doc_key"][order]
    start = first_in_group(b)
    head = k[np.maximum.accumulate(np.where(start, np.arange(len(k)), 0))]
    m = k != head
    e = np.unique(np.stack([head[m], k[m]], axis=1), axis=0) if m.any() else np.zeros((0, 2), np.int64)
    return {"src": e[:, 0], "dst": e[:, 1]}


def _attach(edges: dict, sigs: dict, side: str) -> dict:
    """Edges with the signature of their `side` endpoint (a hash join on doc key)."""
    if not edges:
        return {}
    order = np.argsort(sigs["doc_key"])
    keys = sigs["doc_key"][order]
    idx = order[np.searchsorted(keys, edges[side])]
    return {**edges, f"sig_{side}": sigs["sig"][idx]}


def _check(edges: dict, sigs: dict, threshold: float) -> dict:
    if not edges:
        return {}
    e = _attach(edges, sigs, "dst")
    ok = estimated_jaccard(e["sig_src"], e["sig_dst"]) >= threshold
    return {"src": e["src"][ok], "dst": e["dst"][ok]}


def _adjacency(g: dict) -> tuple[dict, dict]:
    """Both directions of this part's edges, and the initial labels (every node its own)."""
    if not g:
        return {}, {}
    nodes = np.unique(g["node"])
    return g, {"node": nodes, "label": nodes.copy()}


@ray.remote(max_retries=3)
def _send(adj: dict, labels: dict, parts: int) -> tuple:
    """Every node tells its neighbours its label; messages split by the receiver's part."""
    msg = {"node": adj["nbr"], "label": labels["label"][np.searchsorted(labels["node"], adj["node"])]} if adj else {}
    return split(msg, "node", parts) if parts > 1 else msg


@ray.remote(max_retries=3, num_returns=2)
def _update(labels: dict, *msgs: dict) -> tuple[dict, int]:
    msg = concat(msgs)
    if not labels or not msg:
        return labels, 0
    new = labels["label"].copy()
    np.minimum.at(new, np.searchsorted(labels["node"], msg["node"]), msg["label"])
    return {"node": labels["node"], "label": new}, int((new < labels["label"]).sum())


def connected_components(edge_refs: list, parts: int, max_iter: int) -> tuple[list, int, bool]:
    """Refs of (node, label) frames, label = smallest node of its component; rounds; converged."""
    both = [_both_ways.remote(e) for e in edge_refs]
    adj, labels = map(list, zip(*reduce(_adjacency, [partition(both, "node", parts)], num_returns=2), strict=True))
    for it in range(1, max_iter + 1):
        sent = [_send.options(num_returns=parts).remote(a, lab, parts) for a, lab in zip(adj, labels, strict=True)]
        if parts == 1:
            sent = [[s] for s in sent]
        out = [_update.remote(labels[j], *[s[j] for s in sent]) for j in range(parts)]
        labels = [o[0] for o in out]
        if sum(ray.get([o[1] for o in out])) == 0:
            return labels, it, True
    return labels, max_iter, False


@ray.remote(max_retries=3)
def _both_ways(e: dict) -> dict:
    if not e:
        return {}
    return {"node": np.concatenate([e["src"], e["dst"]]), "nbr": np.concatenate([e["dst"], e["src"]])}


def _clusters(g: dict) -> dict:
    """Per node: its component's size and whether it is the one kept (label == node)."""
    if not g:
        return {}
    _, inv, counts = np.unique(g["label"], return_inverse=True, return_counts=True)
    return {"doc_key": g["node"], "size": counts[inv].astype(np.int64),
            "code": np.where(g["node"] == g["label"], KEEP, NEAR).astype(np.int8)}


@ray.remote
def _count(frame: dict, col: str, value=None) -> int:
    if not frame:
        return 0
    return len(frame[col]) if value is None else int((frame[col] == value).sum())


def _total(refs: list, col: str, value=None) -> int:
    return int(sum(ray.get([_count.remote(r, col, value) for r in refs])))


@ray.remote
def _decision_table(exact: list, clusters: list) -> dict:
    """One sorted (doc_key, code, size) table of every document that had a duplicate."""
    ex = concat([ray.get(r) for r in exact])
    cl = concat([ray.get(r) for r in clusters])
    t = concat([{"doc_key": ex["doc_key"], "code": np.full(len(ex["doc_key"]), EXACT, np.int8),
                 "size": np.ones(len(ex["doc_key"]), np.int64)} if ex else {}, cl])
    if not t:
        return {"doc_key": np.zeros(0, np.int64), "code": np.zeros(0, np.int8), "size": np.zeros(0, np.int64)}
    return take(t, np.argsort(t["doc_key"], kind="stable"))


def _apply(batch: pd.DataFrame, table: list) -> pd.DataFrame:
    t = ray.get(table[0])
    keys = batch["doc_key"].to_numpy(np.int64)
    idx = np.minimum(np.searchsorted(t["doc_key"], keys), max(len(t["doc_key"]) - 1, 0))
    hit = (t["doc_key"][idx] == keys) if len(t["doc_key"]) else np.zeros(len(keys), bool)
    code = np.where(hit, t["code"][idx] if len(t["doc_key"]) else 0, KEEP)
    batch["dup_cluster_size"] = np.where(hit & (code != EXACT), t["size"][idx] if len(t["doc_key"]) else 1, 1)
    batch["_drop"] = [REASONS.get(int(c), "") for c in code]
    return batch


def dedup(docs, cfg) -> tuple[object, dict]:
    """`docs` (a Ray Dataset with doc_key, text) marked with `_drop` ("", exact_duplicate,
    near_duplicate) and `dup_cluster_size`, materialized; plus the figures of the run."""
    p, bands, rows = cfg.shuffle_partitions, cfg.minhash_bands, cfg.minhash_rows
    t0 = time.perf_counter()
    keys = docs.select_columns(["doc_key", "text"]).map_batches(
        _keys, fn_kwargs=dict(num_perm=bands * rows, seed=cfg.minhash_seed, ngram=cfg.minhash_ngram),
        batch_format="pandas").materialize().to_numpy_refs()
    exact = reduce(_exact_drops, [partition(keys, "text_hash", p)]) if cfg.exact_dedup else []
    ray.wait(exact, num_returns=len(exact))
    t1 = time.perf_counter()
    by_key = partition(keys, "doc_key", p)
    parted_exact = partition(exact, "doc_key", p) if exact else [[] for _ in range(p)]
    kept, band_rows = map(list, zip(*reduce(_survivors, [by_key, parted_exact], bands, rows, num_returns=2),
                                    strict=True))
    edges = reduce(_star_edges, [partition(band_rows, "bucket", p)])
    figures = {"candidate_edges": _total(edges, "src")}
    if cfg.jaccard_check and figures["candidate_edges"]:
        sig_parts = partition(kept, "doc_key", p)
        with_src = reduce(_attach, [partition(edges, "src", p), sig_parts], "src")
        edges = reduce(_check, [partition(with_src, "dst", p), sig_parts], cfg.jaccard_threshold)
        figures["edges_after_jaccard"] = _total(edges, "src")
    clusters, figures["cc_iterations"], figures["cc_converged"] = [], 0, True
    if figures.get("edges_after_jaccard", figures["candidate_edges"]):
        labels, figures["cc_iterations"], figures["cc_converged"] = connected_components(
            edges, p, cfg.max_cc_iterations)
        clusters = reduce(_clusters, [partition(labels, "label", p)])
    table = _decision_table.remote(exact, clusters)
    figures["clusters"] = _total(clusters, "code", KEEP)
    out = docs.map_batches(_apply, fn_kwargs={"table": [table]}, batch_format="pandas").materialize()
    # The signature pass serves both steps; it is counted in exact dedup's time.
    figures.update(exact_seconds=round(t1 - t0, 3), near_seconds=round(time.perf_counter() - t1, 3))
    return out, figures


def run_dedup_standalone(texts: list[str], cfg) -> list[int]:
    """Indices of `texts` that survive exact + near dedup (used by the benchmark and tests)."""
    docs = ray.data.from_items([{"doc_key": i, "text": t, "id": str(i)} for i, t in enumerate(texts)],
                               override_num_blocks=max(2, cfg.shuffle_partitions))
    out, _ = dedup(docs, cfg)
    kept = out.filter(expr=col("_drop") == "").select_columns(["doc_key"])
    return sorted(int(r["doc_key"]) for r in kept.take_all())
