"""Global dedup on Ray Data: exact (normalised text) then MinHash LSH with distributed connected components.

    .venv/bin/d2d curate --input '../shared/data/web/*.warc.gz' --run-dir runs/x   # runs this after the filters

Bands go to buckets with a Ray Data groupby (a shuffle); each bucket emits star
edges to its smallest document key. Connected components come from iterative
min-label propagation: every round is a Ray Data join (edges x labels) and a
groupby-min, so no task ever holds all edges. Every document whose label (the
smallest key in its component) is not itself is dropped: the keep rule is
"smallest key wins", deterministic across runs and shard orders.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pandas as pd
import ray

from pipeline.curate.minhash import MinHasher, band_keys, jaccard, normalize, shingles


def _text_hash(batch: pd.DataFrame) -> pd.DataFrame:
    batch["text_hash"] = [int.from_bytes(hashlib.sha1(normalize(t).encode()).digest()[:8], "little") & ((1 << 63) - 1)
                          for t in batch["text"]]
    return batch


def _mark_exact(g: pd.DataFrame) -> pd.DataFrame:
    g = g.sort_values("doc_key")
    g["_drop"] = ["" if i == 0 else "exact_duplicate" for i in range(len(g))]
    return g.drop(columns=["text_hash"])


def exact_dedup(docs, partitions: int):
    """Docs with a `_drop` column: "" for the first (smallest key) of each normalised text."""
    return docs.map_batches(_text_hash, batch_format="pandas").groupby(
        "text_hash", num_partitions=partitions).map_groups(_mark_exact, batch_format="pandas")


class _Bander:
    def __init__(self, bands: int, rows: int, ngram: int, seed: int):
        self.bands, self.rows = bands, rows
        self.hasher = MinHasher(bands * rows, seed, ngram)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        sigs = self.hasher.signatures(list(batch["text"]))
        keys, buckets = [], []
        for k, sig in zip(batch["doc_key"], sigs, strict=True):
            for b in band_keys(sig, self.bands, self.rows):
                keys.append(int(k))
                buckets.append(b)
        return pd.DataFrame({"doc_key": np.array(keys, np.int64), "bucket": np.array(buckets, np.int64)})


def _star_edges(g: pd.DataFrame) -> pd.DataFrame:
    keys = np.unique(g["doc_key"].to_numpy())
    return pd.DataFrame({"src": np.full(max(len(keys) - 1, 0), keys[0], np.int64), "dst": keys[1:]})


def _both_ways(b: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"node": np.concatenate([b["src"], b["dst"]]), "nbr": np.concatenate([b["dst"], b["src"]])})


def _min_label(g: pd.DataFrame) -> pd.DataFrame:
    own = g.loc[g["self"] == 1, "label"]
    new = int(g["label"].min())
    changed = int(own.empty or new < int(own.min()))
    return pd.DataFrame({"node": [int(g["node"].iloc[0])], "label": [new], "self": [1], "changed": [changed]})


def connected_components(edges, partitions: int, max_iter: int):
    """(node, label) for every node in `edges` (src, dst): label = smallest node of its component."""
    adj = edges.map_batches(_both_ways, batch_format="pandas").materialize()
    labels = adj.map_batches(lambda b: pd.DataFrame({"node": b["node"], "label": b["node"], "self": 1}),
                             batch_format="pandas")
    labels = labels.groupby("node", num_partitions=partitions).map_groups(_min_label, batch_format="pandas")
    labels = labels.drop_columns(["changed"]).materialize()
    for it in range(1, max_iter + 1):
        sent = adj.join(labels.drop_columns(["self"]), join_type="inner", num_partitions=partitions, on=("node",))
        sent = sent.map_batches(lambda b: pd.DataFrame({"node": b["nbr"], "label": b["label"], "self": 0}),
                                batch_format="pandas")
        new = sent.union(labels).groupby("node", num_partitions=partitions).map_groups(_min_label, batch_format="pandas")
        new = new.materialize()
        changed = new.sum("changed") or 0
        labels = new.drop_columns(["changed"]).materialize()
        if changed == 0:
            return labels.drop_columns(["self"]), it
    return labels.drop_columns(["self"]), max_iter


def _cluster_info(g: pd.DataFrame) -> pd.DataFrame:
    lab = int(g["label"].iloc[0])
    return pd.DataFrame({"doc_key": g["node"].astype(np.int64), "dup_cluster_size": len(g),
                         "_near": ["" if int(n) == lab else "near_duplicate" for n in g["node"]]})


def _jaccard_filter(ngram: int, threshold: float):
    def fn(b: pd.DataFrame) -> pd.DataFrame:
        keep = [jaccard(shingles(x, ngram), shingles(y, ngram)) >= threshold for x, y in zip(b["text_src"], b["text_dst"], strict=True)]
        return b.loc[keep, ["src", "dst"]]
    return fn


def _finish(b: pd.DataFrame) -> pd.DataFrame:
    b["dup_cluster_size"] = b["dup_cluster_size"].fillna(1).astype(np.int64)
    b["_drop"] = b["_near"].fillna("")
    return b.drop(columns=["_near"])


def near_dedup(docs, cfg) -> tuple[object, dict]:
    """Docs (materialized) with `dup_cluster_size` and `_drop` ("" or "near_duplicate"), plus figures."""
    p = cfg.shuffle_partitions
    bander = _Bander(cfg.minhash_bands, cfg.minhash_rows, cfg.minhash_ngram, cfg.minhash_seed)
    buckets = docs.select_columns(["doc_key", "text"]).map_batches(bander, batch_format="pandas")
    edges = buckets.groupby("bucket", num_partitions=p).map_groups(_star_edges, batch_format="pandas").materialize()
    figures = {"candidate_edges": edges.count()}
    if figures["candidate_edges"] and cfg.jaccard_check:
        texts = docs.select_columns(["doc_key", "text"])
        edges = edges.join(texts.rename_columns({"doc_key": "src", "text": "text_src"}), "inner", p, on=("src",))
        edges = edges.join(texts.rename_columns({"doc_key": "dst", "text": "text_dst"}), "inner", p, on=("dst",))
        edges = edges.map_batches(_jaccard_filter(cfg.minhash_ngram, cfg.jaccard_threshold),
                                  batch_format="pandas").materialize()
        figures["edges_after_jaccard"] = edges.count()
    if not edges.count():
        out = docs.map_batches(lambda b: b.assign(dup_cluster_size=np.int64(1), _drop=""), batch_format="pandas")
        return out.materialize(), {**figures, "cc_iterations": 0, "clusters": 0}
    labels, iters = connected_components(edges, p, cfg.max_cc_iterations)
    info = labels.groupby("label", num_partitions=p).map_groups(_cluster_info, batch_format="pandas").materialize()
    figures.update(cc_iterations=iters, clusters=info.filter(lambda r: r["_near"] == "").count())
    out = docs.join(info, join_type="left_outer", num_partitions=p, on=("doc_key",))
    return out.map_batches(_finish, batch_format="pandas").materialize(), figures


def run_dedup_standalone(texts: list[str], cfg) -> list[int]:
    """Indices of `texts` that survive exact + near dedup (used by the benchmark and tests)."""
    docs = ray.data.from_items([{"doc_key": i, "text": t, "id": str(i)} for i, t in enumerate(texts)],
                               override_num_blocks=max(2, cfg.shuffle_partitions))
    if cfg.exact_dedup:
        docs = exact_dedup(docs, cfg.shuffle_partitions).filter(lambda r: r["_drop"] == "").drop_columns(["_drop"])
    out, _ = near_dedup(docs.materialize(), cfg)
    return sorted(int(r["doc_key"]) for r in out.filter(lambda r: r["_drop"] == "").select_columns(["doc_key"]).take_all())
