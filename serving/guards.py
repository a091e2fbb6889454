"""The guard chains as the ingress runs them: every client message in, every streamed byte out.

    g = Guards(ServeConfig(model="m"), audit_secret=b"k")
    allowed, messages, summary = await g.scan_input(messages, request_id, operator=True)
    held = g.hold_back(context)          # streaming: release only text an output scan has seen

Input: each client-supplied message (system, developer, assistant and user alike:
clients can forge history) and, when there are several, the joined conversation, so an
attack split across messages is seen whole. The operator's system prompt is trusted and
not scanned. Output: a whole reply is scanned once; a streamed reply goes through
`HoldBack`, which scans each window as it fills and releases only text that a scan has
covered and that lies `stream_holdback_chars` before the window's end (an e-mail address
cut by the window edge is seen whole by the next scan). Redaction happens inside the
stream; a redaction that would change text already sent, or a block, ends the stream.
Running in the ingress replica (no guard deployments) saves two Serve hops per request.
Every verdict goes to the audit log as keyed HMACs and guard decisions, never raw text.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from serving.config import ServeConfig

_ORDER = {"allow": 0, "flag": 1, "redact": 2, "block": 3}


def summary(results: list, blocked_reason: str = "", ms: float | None = None) -> dict:
    """What a client sees of one or more ChainResults: the worst action, guards, reasons, latency."""
    action, triggered, reasons = "allow", [], []
    for r in results:
        if _ORDER.get(r.action, 0) > _ORDER[action]:
            action = r.action
        triggered += [g for g in r.triggered if g not in triggered]
        reasons += [x for x in r.reasons if x not in reasons]
    allowed = all(r.allowed for r in results) and not blocked_reason
    if blocked_reason:
        action, reasons = "block", reasons + [blocked_reason]
    latency = sum(r.latency_ms for r in results) if ms is None else ms
    return {"action": action, "allowed": allowed, "triggered": triggered, "reasons": reasons,
            "latency_ms": round(latency, 2)}


class HoldBack:
    """A streamed reply's guard: `add` text, `check` when `due`, send only what `check` returns.

    `text` is the reply as sanitized so far; `sent` chars of it have been released. None
    from `check` means stop: `blocked` says why."""

    def __init__(self, scan, stride: int, window: int, holdback: int):
        self.scan, self.stride, self.window, self.holdback = scan, stride, window, holdback
        self.text, self.sent, self.checked = "", 0, 0
        self.results: list = []
        self.blocked = ""

    def add(self, delta: str) -> None:
        self.text += delta

    def due(self) -> bool:
        return len(self.text) - self.checked >= self.stride

    def check(self, final: bool = False) -> str | None:
        # The window always covers everything unsent; the final scan sees the whole reply.
        start = 0 if final else min(max(0, len(self.text) - self.window), self.sent)
        seg = self.text[start:]
        r = self.scan(seg)
        self.results.append(r)
        if not r.allowed:
            self.blocked = "output guard blocked the reply"
            return None
        if r.sanitized_text != seg:
            kept = self.sent - start
            if r.sanitized_text[:kept] != seg[:kept]:
                self.blocked = "stream: a redaction reached text already sent"
                return None
            self.text = self.text[:start] + r.sanitized_text
        self.checked = len(self.text)
        end = len(self.text) if final else max(self.sent, len(self.text) - self.holdback)
        out, self.sent = self.text[self.sent:end], end
        return out


class Guards:
    def __init__(self, cfg: ServeConfig, audit_secret: bytes | None = None):
        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from guardrails.audit import AuditLog
        from guardrails.chain import GuardChain
        from guardrails.policy import load_policy

        self.cfg = cfg
        policy = load_policy(cfg.guard_policy or None)
        self.input = GuardChain.input_from_policy(policy)
        self.output = GuardChain.output_from_policy(policy)
        path = cfg.audit_log or os.path.join(cfg.run_dir, "serve", "audit.jsonl")
        self.audit = None if cfg.audit_log == "off" else AuditLog(os.path.abspath(path), audit_secret)
        # Guards are CPU-bound and not promised to be thread-safe: one worker thread per replica.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="guards")

    def audit_results(self, request_id: str, stage: str, results: list) -> None:
        if self.audit is not None:
            for r in results:
                self.audit.write(request_id, stage, r)

    async def run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    @staticmethod
    def context(messages: list[dict], request_id: str, canary: str = ""):
        from guardrails.base import ScanContext

        system = "\n".join(m["content"] for m in messages if m["role"] == "system")
        prompt = next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
        return ScanContext(prompt=prompt, system_prompt=system, messages=messages, request_id=request_id,
                           canary=canary)

    def _scan_messages(self, messages: list[dict], first: int, ctx) -> tuple[list, list[dict]]:
        out = [dict(m) for m in messages]
        client = out[first:]
        results = [self.input.scan(m["content"], ctx) for m in client]
        for m, r in zip(client, results, strict=True):
            if r.action == "redact":
                m["content"] = r.sanitized_text
        if len(client) > 1:
            # Contents only: role labels ("system: ...") read as an injection to the classifier.
            joined = "\n".join(m["content"] for m in messages[first:])
            results.append(self.input.scan(joined, ctx))
        return results, out

    async def scan_input(self, messages: list[dict], request_id: str, operator: bool) -> tuple[bool, list, dict]:
        """(allowed, messages with redactions applied, client summary); the worst action wins."""
        ctx = self.context(messages, request_id)
        results, out = await self.run(self._scan_messages, messages, 1 if operator else 0, ctx)
        self.audit_results(request_id, "input", results)
        s = summary(results)
        return s["allowed"], out, s

    async def scan_output(self, text: str, ctx, request_id: str):
        r = await self.run(self.output.scan, text, ctx)
        self.audit_results(request_id, "output", [r])
        return r

    def hold_back(self, ctx) -> HoldBack:
        s = self.output.stream_settings
        return HoldBack(lambda text: self.output.scan(text, ctx), s.stride_chars, s.window_chars,
                        min(self.cfg.stream_holdback_chars, s.window_chars - s.stride_chars))
