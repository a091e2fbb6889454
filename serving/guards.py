"""InputGuard and OutputGuard deployments: the guardrails chains in front of and behind the LLM.

    ingress -> InputGuard.scan(messages)            (block / redact / flag the prompt)
    ingress -> OutputGuard.complete|stream(request) -> LLM, scanning the reply

OutputGuard holds the LLM handle, so a streamed reply passes through it token by
token and a mid-stream block stops the stream at once (guardrails' StreamScanner).
Every verdict goes to the audit log as hashes and guard decisions, never raw text.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from ray import serve
from ray.serve.handle import DeploymentHandle

from serving.config import ServeConfig

_ORDER = {"allow": 0, "flag": 1, "redact": 2, "block": 3}


def summary(result) -> dict:
    """What a client sees of a ChainResult: action, guards triggered, reasons, latency."""
    return {"action": result.action, "allowed": result.allowed, "triggered": list(result.triggered),
            "reasons": list(result.reasons), "latency_ms": round(result.latency_ms, 2)}


class _GuardBase:
    def __init__(self, cfg: dict, stage: str):
        os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from guardrails.audit import AuditLog
        from guardrails.chain import GuardChain
        from guardrails.policy import load_policy

        self.cfg = ServeConfig(**cfg)
        policy = load_policy(self.cfg.guard_policy or None)
        self.chain = (GuardChain.input_from_policy if stage == "input" else GuardChain.output_from_policy)(policy)
        path = self.cfg.audit_log or os.path.join(self.cfg.run_dir, "serve", "audit.jsonl")
        self.audit = None if self.cfg.audit_log == "off" else AuditLog(os.path.abspath(path))
        self.stage = stage
        # Guards are CPU-bound and not promised to be thread-safe: one worker thread per replica.
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{stage}-guard")

    async def _scan(self, text: str, ctx, request_id: str):
        result = await asyncio.get_running_loop().run_in_executor(self.pool, self.chain.scan, text, ctx)
        self._audit(request_id, result)
        return result

    def _audit(self, request_id: str, result) -> None:
        if self.audit is not None:
            self.audit.write(request_id, self.stage, result)

    def ready(self) -> bool:
        return True


def _context(messages: list[dict], request_id: str, prompt: str = ""):
    from guardrails.base import ScanContext

    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    return ScanContext(prompt=prompt, system_prompt=system, messages=messages, request_id=request_id)


@serve.deployment(name="InputGuard")
class InputGuard(_GuardBase):
    def __init__(self, cfg: dict):
        super().__init__(cfg, "input")

    async def scan(self, messages: list[dict], request_id: str) -> dict:
        """Scan every user message (clients can forge history); the worst action wins."""
        ctx = _context(messages, request_id)
        out = [dict(m) for m in messages]
        worst, reasons, triggered, ms = "allow", [], [], 0.0
        for m in out:
            if m["role"] != "user":
                continue
            r = await self._scan(m["content"], ctx, request_id)
            ms += r.latency_ms
            reasons += [x for x in r.reasons if x not in reasons]
            triggered += [g for g in r.triggered if g not in triggered]
            if _ORDER.get(r.action, 0) > _ORDER[worst]:
                worst = r.action
            if r.action == "redact":
                m["content"] = r.sanitized_text
        return {"allowed": worst != "block", "messages": out,
                "summary": {"action": worst, "allowed": worst != "block", "triggered": triggered,
                            "reasons": reasons, "latency_ms": round(ms, 2)}}


@serve.deployment(name="OutputGuard")
class OutputGuard(_GuardBase):
    def __init__(self, llm: DeploymentHandle, cfg: dict):
        super().__init__(cfg, "output")
        self.llm = llm

    async def info(self) -> dict:
        return await self.llm.info.remote()

    @staticmethod
    def _prompt(req: dict) -> str:
        return next((m["content"] for m in reversed(req["messages"]) if m["role"] == "user"), "")

    async def complete(self, req: dict) -> dict:
        res = await self.llm.complete.remote(req)
        if "error" in res:
            return res
        r = await self._scan(res["text"], _context(req["messages"], req["request_id"], self._prompt(req)),
                             req["request_id"])
        if not r.allowed:
            res.update(text=self.cfg.refusal_message, finish_reason="content_filter")
        elif r.action == "redact":
            res["text"] = r.sanitized_text
        res["guard"] = summary(r)
        return res

    async def stream(self, req: dict):
        """Pass the LLM's deltas on while the scanner allows them; a block ends the stream."""
        ctx = _context(req["messages"], req["request_id"], self._prompt(req))
        scanner = self.chain.stream(ctx)
        loop = asyncio.get_running_loop()
        upstream = self.llm.options(stream=True).stream.remote(req)
        async for item in upstream:
            if "delta" in item:
                r = await loop.run_in_executor(self.pool, scanner.feed, item["delta"])
                if r is not None and not r.allowed:
                    upstream.cancel()
                    self._audit(req["request_id"], r)
                    yield {"finish_reason": "content_filter", "refusal": self.cfg.refusal_message,
                           "guard": summary(r)}
                    return
                yield item
            elif "error" in item:
                yield item
            else:
                r = await loop.run_in_executor(self.pool, scanner.finish)
                self._audit(req["request_id"], r)
                if not r.allowed:
                    item.update(finish_reason="content_filter", refusal=self.cfg.refusal_message)
                yield {**item, "guard": summary(r)}
