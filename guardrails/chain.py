"""Guards composed in order: one scan per request, or a streaming scan of a reply.

    from guardrails.policy import load_policy
    from guardrails.chain import GuardChain
    from guardrails.base import ScanContext
    chain = GuardChain.input_from_policy(load_policy())
    result = chain.scan("Ignore all previous instructions", ScanContext())
    result.allowed, result.action, result.reasons, result.to_dict()

    out = GuardChain.output_from_policy(load_policy())
    stream = out.stream(ScanContext(system_prompt="..."))
    for delta in deltas:
        r = stream.feed(delta)
        if r is not None and not r.allowed:
            break                      # stop the stream now; r says why
    final = stream.finish()

Each guard sees the text as the guards before it left it (a redaction carries on).
The chain's action is the strongest one taken (block > redact > flag > allow). A guard
that raises at run time is a block (fail closed), with the exception's type as reason.
Try it: `d2d guard scan "some text"`.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any

from guardrails.base import Guard, ScanContext, Verdict
from guardrails.policy import Policy, StreamSettings
from guardrails.registry import guard_class

_RANK = {"allow": 0, "flag": 1, "redact": 2, "block": 3}


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass
class ChainResult:
    allowed: bool
    action: str
    sanitized_text: str
    verdicts: list[Verdict] = field(default_factory=list)
    latency_ms: float = 0.0
    reasons: list[str] = field(default_factory=list)
    text_sha256: str = ""
    vault: Any = None
    """A `guardrails.pii.PiiVault` when the PII guard ran in reversible mode, else None."""

    @property
    def triggered(self) -> list[str]:
        """Names of the guards that fired (any action other than allow)."""
        return [v.guard for v in self.verdicts if v.action != "allow"]

    def to_dict(self, include_text: bool = False) -> dict[str, Any]:
        """JSON-safe summary. Texts appear only as sha256 hashes unless include_text is set
        (then only the sanitized text, which still holds any PII that was merely flagged)."""
        out = {
            "allowed": self.allowed,
            "action": self.action,
            "reasons": list(self.reasons),
            "triggered": self.triggered,
            "latency_ms": round(self.latency_ms, 3),
            "text_sha256": self.text_sha256,
            "sanitized_sha256": sha256(self.sanitized_text),
            "verdicts": [
                {
                    "guard": v.guard,
                    "action": v.action,
                    "allowed": v.allowed,
                    "score": round(float(v.score), 4),
                    "reasons": list(v.reasons),
                    "latency_ms": round(v.latency_ms, 3),
                    "spans": [{"start": s.start, "end": s.end, "label": s.label,
                               "score": round(float(s.score), 4)} for s in v.spans],
                }
                for v in self.verdicts
            ],
        }
        if include_text:
            out["sanitized_text"] = self.sanitized_text
        return out


class GuardChain:
    def __init__(self, guards: list[Guard], *, fail_fast: bool = True,
                 stream: StreamSettings | None = None, stage: str = "input"):
        self.guards = list(guards)
        self.fail_fast = fail_fast
        self.stream_settings = stream or StreamSettings()
        self.stage = stage

    @classmethod
    def from_policy(cls, policy: Policy, stage: str) -> GuardChain:
        if stage not in ("input", "output"):
            raise ValueError(f"stage: {stage!r} is not one of input, output")
        specs = policy.input if stage == "input" else policy.output
        guards = [guard_class(s.name)(s.config) for s in specs]
        return cls(guards, fail_fast=policy.fail_fast, stream=policy.stream, stage=stage)

    @classmethod
    def input_from_policy(cls, policy: Policy) -> GuardChain:
        return cls.from_policy(policy, "input")

    @classmethod
    def output_from_policy(cls, policy: Policy) -> GuardChain:
        return cls.from_policy(policy, "output")

    def scan(self, text: str, context: ScanContext | None = None) -> ChainResult:
        context = context if context is not None else ScanContext()
        started = time.perf_counter()
        current = text
        verdicts: list[Verdict] = []
        for guard in self.guards:
            t0 = time.perf_counter()
            try:
                v = guard.scan(current, context)
            except Exception as e:  # noqa: BLE001 - a broken guard must not let text through
                v = Verdict(guard.name, False, current, score=1.0, action="block",
                            reasons=[f"{guard.name}: guard error ({type(e).__name__})"])
            v.latency_ms = (time.perf_counter() - t0) * 1000
            verdicts.append(v)
            if v.action == "redact":
                current = v.sanitized_text
            if not v.allowed and self.fail_fast:
                break
        action = max((v.action for v in verdicts), key=_RANK.__getitem__, default="allow")
        return ChainResult(
            allowed=all(v.allowed for v in verdicts),
            action=action,
            sanitized_text=current,
            verdicts=verdicts,
            latency_ms=(time.perf_counter() - started) * 1000,
            reasons=[r for v in verdicts if v.action != "allow" for r in v.reasons],
            text_sha256=sha256(text),
            vault=context.pii_vault,
        )

    def stream(self, context: ScanContext | None = None) -> StreamScanner:
        return StreamScanner(self, context if context is not None else ScanContext())


class StreamScanner:
    """Checks a reply while it streams: every `stride_chars` new characters the chain scans
    the last `window_chars`; a block ends the stream with that verdict. Redaction cannot
    take back text already sent, so mid-stream checks only block; `finish()` scans the
    whole reply and its `sanitized_text` is the redacted reply."""

    def __init__(self, chain: GuardChain, context: ScanContext):
        self.chain = chain
        self.context = context
        self.text = ""
        self.checks = 0
        self._checked_at = 0
        self._blocked: ChainResult | None = None

    def feed(self, delta: str) -> ChainResult | None:
        """Add streamed text; a result when a check ran (not allowed = stop now), else None."""
        if self._blocked is not None:
            return self._blocked
        self.text += delta
        s = self.chain.stream_settings
        if len(self.text) - self._checked_at < s.stride_chars:
            return None
        self._checked_at = len(self.text)
        self.checks += 1
        result = self.chain.scan(self.text[-s.window_chars:], self.context)
        if not result.allowed:
            self._blocked = result
        return result

    def finish(self) -> ChainResult:
        """The final verdict: the blocking one if the stream was stopped, else a full scan."""
        if self._blocked is not None:
            return self._blocked
        self.checks += 1
        return self.chain.scan(self.text, self.context)
