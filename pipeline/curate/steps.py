"""The step contract: a step is a pure `__call__(doc) -> (keep, reason)` that may rewrite doc["text"].

    .venv/bin/python -c "from pipeline.curate.steps import run_steps; help(run_steps)"

`run_steps` runs a list of steps over documents and counts, per step, documents
in and out, drops by reason, bytes and seconds (datatrove's contract: reasons are
data, the executor counts them). No Ray here.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable


class Step:
    name = "step"

    def __call__(self, doc: dict) -> tuple[bool, str]:
        raise NotImplementedError


def new_stats() -> dict:
    return {"docs_in": 0, "docs_out": 0, "bytes_in": 0, "bytes_out": 0, "seconds": 0.0, "dropped": Counter()}


def _size(doc: dict) -> int:
    return len(doc["text"].encode()) if isinstance(doc.get("text"), str) else len(doc.get("raw") or b"")


def run_steps(docs: Iterable[dict], steps: list[Step], stats: dict, rejects: list | None = None) -> list[dict]:
    """Documents that pass every step; `stats[step.name]` accumulates counts, `rejects` gets drops."""
    out = []
    for doc in docs:
        for step in steps:
            s = stats.setdefault(step.name, new_stats())
            s["docs_in"] += 1
            s["bytes_in"] += _size(doc)
            t0 = time.perf_counter()
            keep, reason = step(doc)
            s["seconds"] += time.perf_counter() - t0
            if not keep:
                s["dropped"][reason] += 1
                if rejects is not None:
                    rejects.append({"id": doc["id"], "url": doc.get("url", ""), "step": step.name, "reason": reason,
                                    "text": (doc.get("text") or (doc.get("raw") or b"").decode("utf-8", "replace"))[:100_000]})
                break
            s["docs_out"] += 1
            s["bytes_out"] += _size(doc)
        else:
            out.append(doc)
    return out


def merge_stats(into: dict, other: dict) -> dict:
    for name, s in other.items():
        t = into.setdefault(name, new_stats())
        for k in ("docs_in", "docs_out", "bytes_in", "bytes_out", "seconds"):
            t[k] += s[k]
        t["dropped"] = Counter(t["dropped"]) + Counter(s["dropped"])
    return into


def plain_stats(stats: dict) -> dict:
    return {n: {**s, "seconds": round(s["seconds"], 3), "dropped": dict(sorted(Counter(s["dropped"]).items()))}
            for n, s in stats.items()}
