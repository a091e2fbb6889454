"""Audit log of guard verdicts: one JSON line per guard per scan, never the raw text.

    from guardrails.audit import AuditLog
    AuditLog("runs/serve/audit.jsonl").write(request_id, "input", chain_result)
    .venv/bin/d2d guard scan "text" --audit-log /tmp/audit.jsonl

A line: time (UTC ISO), request_id, stage, guard, action, allowed, score, reasons,
latency_ms, the chain's action, and sha256 hashes of the scanned and sanitized texts
(to match a complaint to a record without storing what was said). Reasons name entity
types and secret kinds, never values. Appends are serialised by a lock, and each line
is one write, so concurrent writers in one process do not interleave.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from guardrails.chain import ChainResult, sha256


class AuditLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def records(self, request_id: str, stage: str, result: ChainResult) -> list[dict]:
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        common = {"time": now, "request_id": request_id, "stage": stage,
                  "chain_action": result.action, "chain_allowed": result.allowed,
                  "text_sha256": result.text_sha256,
                  "sanitized_sha256": sha256(result.sanitized_text)}
        return [{**common, "guard": v.guard, "action": v.action, "allowed": v.allowed,
                 "score": round(float(v.score), 4), "reasons": list(v.reasons),
                 "latency_ms": round(v.latency_ms, 3)} for v in result.verdicts]

    def write(self, request_id: str, stage: str, result: ChainResult) -> None:
        lines = "".join(json.dumps(r) + "\n" for r in self.records(request_id, stage, result))
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(lines)
