"""Audit log of guard verdicts: one JSON line per guard per scan, never the raw text.

    from guardrails.audit import AuditLog
    AuditLog("runs/serve/audit.jsonl", secret=b"server key").write(request_id, "input", chain_result)
    .venv/bin/d2d guard scan "text" --audit-log /tmp/audit.jsonl

A line: time (UTC ISO), request_id, stage, guard, action, allowed, score, reasons,
latency_ms, the chain's action, and keyed HMAC-SHA256 digests of the scanned and
sanitized texts with `key_id` (the first 12 hex digits of sha256(key)). A plain hash
would let anyone with a guess confirm what was said; with the key, the operator can
still match a complaint to a record (`AuditLog.digest(text)`) and nobody else can.
Without a secret the key is random per process, so records match only within one run.
Reasons name entity types and secret kinds, never values. Appends are serialised by a
lock, and each line is one write, so concurrent writers in one process do not interleave.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
import time
from pathlib import Path

from guardrails.chain import ChainResult, sha256


class AuditLog:
    def __init__(self, path: str | Path, secret: bytes | str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        key = secret.encode() if isinstance(secret, str) else secret
        self._key = key or os.urandom(32)
        self.key_id = hashlib.sha256(self._key).hexdigest()[:12]
        self._lock = threading.Lock()

    def _mac(self, text_sha256: str) -> str:
        # Keyed over the text's sha256 (what ChainResult keeps), so no raw text is needed here.
        return hmac.new(self._key, text_sha256.encode(), hashlib.sha256).hexdigest()

    def digest(self, text: str) -> str:
        """The `text_hmac` a record of `text` carries (to find it from a complaint)."""
        return self._mac(sha256(text))

    def records(self, request_id: str, stage: str, result: ChainResult) -> list[dict]:
        now = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
        common = {"time": now, "request_id": request_id, "stage": stage,
                  "chain_action": result.action, "chain_allowed": result.allowed,
                  "key_id": self.key_id, "text_hmac": self._mac(result.text_sha256),
                  "sanitized_hmac": self._mac(sha256(result.sanitized_text))}
        return [{**common, "guard": v.guard, "action": v.action, "allowed": v.allowed,
                 "score": round(float(v.score), 4), "reasons": list(v.reasons),
                 "latency_ms": round(v.latency_ms, 3)} for v in result.verdicts]

    def write(self, request_id: str, stage: str, result: ChainResult) -> None:
        lines = "".join(json.dumps(r) + "\n" for r in self.records(request_id, stage, result))
        with self._lock, self.path.open("a", encoding="utf-8") as f:
            f.write(lines)
