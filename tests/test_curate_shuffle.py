"""Task shuffles and distributed connected components of the dedup stage, against in-process references."""

from __future__ import annotations

import numpy as np
import pytest


def _union_find_min_labels(n: int, src: np.ndarray, dst: np.ndarray) -> dict[int, int]:
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for a, b in zip(src.tolist(), dst.tolist(), strict=True):
        ra, rb = root(a), root(b)
        parent[max(ra, rb)] = min(ra, rb)
    nodes = set(src.tolist()) | set(dst.tolist())
    return {v: root(v) for v in nodes}


@pytest.mark.parametrize("parts", [1, 3])
def test_connected_components_match_union_find(ray_local, parts):
    import ray

    from pipeline.curate.dedup import connected_components

    rng = np.random.default_rng(parts)
    n = 300
    chain = np.arange(40, 80)  # a long path: needs many propagation rounds, labels must still converge
    src = np.concatenate([rng.integers(0, n, 120), chain[:-1]])
    dst = np.concatenate([rng.integers(0, n, 120), chain[1:]])
    keep = src != dst
    src, dst = src[keep], dst[keep]
    refs = [ray.put({"src": s, "dst": d}) for s, d in zip(np.array_split(src, 4), np.array_split(dst, 4), strict=True)]
    labels, rounds, converged = connected_components(refs, parts, max_iter=200)
    got = {}
    for f in ray.get(labels):
        got.update(zip(f["node"].tolist(), f["label"].tolist(), strict=True) if f else [])
    assert converged and rounds > 1
    assert got == _union_find_min_labels(n, src, dst)


def test_partition_and_reduce_group_by_key(ray_local):
    import ray

    from pipeline.curate.shuffle import concat, partition, reduce

    rng = np.random.default_rng(0)
    frames = [{"k": rng.integers(0, 50, 100), "v": rng.integers(0, 1000, 100)} for _ in range(5)]

    def sums(g):
        keys = np.unique(g["k"])
        return {"k": keys, "s": np.array([g["v"][g["k"] == k].sum() for k in keys])}

    out = concat(ray.get(reduce(sums, [partition([ray.put(f) for f in frames], "k", 4)])))
    allf = concat(frames)
    want = {int(k): int(allf["v"][allf["k"] == k].sum()) for k in np.unique(allf["k"])}
    assert dict(zip(out["k"].tolist(), out["s"].tolist(), strict=True)) == want  # every key in exactly one part


def test_dedup_keeps_smallest_key_and_counts_clusters(ray_local):
    from cluster.benchmarks.curate import planted_corpus
    from pipeline.curate.config import CurateConfig
    from pipeline.curate.dedup import run_dedup_standalone

    texts = planted_corpus(6, seed=3)  # per base: itself, 0.5% / 2% / 10% word substitutions
    texts = texts + [texts[4]]  # an exact copy with a larger key
    kept = run_dedup_standalone(texts, CurateConfig())
    assert len(texts) - 1 not in kept  # the exact copy
    for base in range(0, 24, 4):
        assert base in kept and base + 1 not in kept  # smallest key wins; 0.5% edit (Jaccard ~0.97) dropped
        assert base + 3 in kept  # 10% edit (Jaccard ~0.3) is a different document
