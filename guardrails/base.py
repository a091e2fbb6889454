"""The one guard interface: text in, a `Verdict` out. Verdicts are returned, never raised.

    from guardrails.base import Verdict, ScanContext
    v = guard.scan("some prompt", ScanContext(system_prompt="..."))
    v.allowed, v.sanitized_text, v.reasons

Input guards see the prompt (conversation and system prompt in the context); output
guards see the reply, with the prompt in `context.prompt`. Exceptions are for bad
configuration only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Literal

Action = Literal["block", "redact", "flag", "allow"]


@dataclass
class Span:
    start: int
    end: int
    label: str
    score: float = 1.0


@dataclass
class Verdict:
    guard: str
    allowed: bool
    sanitized_text: str
    score: float = 0.0
    """How strongly the guard fired, in [0, 1]."""
    reasons: list[str] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    action: Action = "allow"
    """What the policy did: allow, flag (allowed, noted), redact (allowed, text changed), block."""
    latency_ms: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ScanContext:
    """What a guard may know beyond the text itself."""

    prompt: str = ""
    """For output guards: the user prompt the reply answers."""
    system_prompt: str = ""
    messages: list[dict] = field(default_factory=list)
    """The conversation so far, OpenAI-style {"role", "content"} dicts."""
    request_id: str = ""
    canary: str = ""
    """A token planted in the system prompt; seeing it in a reply means the prompt leaked."""


class Guard:
    """Base class: subclasses set `name` and implement `scan`; `__init__` takes policy options."""

    name: ClassVar[str] = ""
    kind: ClassVar[Literal["input", "output", "both"]] = "input"

    def scan(self, text: str, context: ScanContext | None = None) -> Verdict:  # pragma: no cover
        raise NotImplementedError
