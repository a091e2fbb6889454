"""Hash shuffles of small numeric columns with plain Ray tasks, for the dedup stages.

    .venv/bin/python -m pytest tests/test_curate_shuffle.py -q

A "frame" is a dict of equal-length numpy arrays (keys, hashes, signatures; never
text). `partition` splits every input frame by a hash of one column into P parts
in one wave of tasks; `reduce` hands each part's pieces to a function in a second
wave. That is the whole map/shuffle/reduce of a Ray Data groupby or join, without
its operator start-up and aggregator actors, which on a small cluster cost seconds
per groupby and made iterative connected components take minutes. Nothing is ever
gathered on the driver: results stay in the object store as refs, and lost objects
are rebuilt from lineage when a node goes away (tasks retry).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import ray

Frame = dict[str, np.ndarray]


def concat(frames: Sequence[Frame]) -> Frame:
    """One frame from several with the same columns (empty frames allowed)."""
    frames = [f for f in frames if f]
    if not frames:
        return {}
    return {k: np.concatenate([f[k] for f in frames]) for k in frames[0]}


def take(frame: Frame, idx) -> Frame:
    return {k: v[idx] for k, v in frame.items()}


def part_of(values: np.ndarray, parts: int) -> np.ndarray:
    """Partition index of int64 keys: a multiplicative hash, so sequential keys spread out."""
    h = values.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    return ((h >> np.uint64(32)) % np.uint64(parts)).astype(np.int64)


def split(frame: Frame, key: str, parts: int) -> tuple[Frame, ...]:
    """The frame cut into `parts` frames by the hash of column `key` (empty frames stay empty)."""
    if not frame:
        return tuple({} for _ in range(parts))
    p = part_of(frame[key], parts)
    return tuple(take(frame, p == i) for i in range(parts))


_split = ray.remote(max_retries=3)(split)


def partition(refs: Sequence, key: str, parts: int) -> list[list]:
    """[part][input] refs: every input frame split by the hash of column `key`."""
    if parts == 1:
        return [list(refs)]
    splits = [_split.options(num_returns=parts).remote(r, key, parts) for r in refs]
    return [[s[i] for s in splits] for i in range(parts)]


@ray.remote(max_retries=3)
def _reduce(fn: Callable, n_groups: int, sizes: list[int], args: tuple, *pieces):
    groups, pos = [], 0
    for n in sizes[:n_groups]:
        groups.append(concat(pieces[pos:pos + n]))
        pos += n
    return fn(*groups, *args)


def reduce(fn: Callable, parted: Sequence[list[list]], *args, num_returns: int = 1) -> list:
    """fn(group_0, group_1, ..., *args) once per part, where group_g is part i of `parted[g]`.

    `parted` are outputs of `partition` with the same number of parts and the same
    partitioner, so part i of every input holds the same keys (a hash join)."""
    parts = len(parted[0])
    out = []
    for i in range(parts):
        pieces = [r for g in parted for r in g[i]]
        sizes = [len(g[i]) for g in parted]
        out.append(_reduce.options(num_returns=num_returns).remote(fn, len(parted), sizes, args, *pieces))
    return out


def first_in_group(keys: np.ndarray) -> np.ndarray:
    """Boolean mask: True where sorted `keys` starts a new group."""
    m = np.ones(len(keys), dtype=bool)
    m[1:] = keys[1:] != keys[:-1]
    return m
