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
    pii_vault: Any = None
    """Set by the PII guard in reversible mode: a `guardrails.pii.PiiVault` for this request."""


class Guard:
    """Base class: subclasses set `name` and implement `scan`; `__init__` takes policy options.

    `Config` is the guard's options dataclass (a `GuardConfig`); the policy file's fields
    for the guard are its fields, so an unknown field fails at load naming it.
    """

    name: ClassVar[str] = ""
    kind: ClassVar[Literal["input", "output", "both"]] = "input"
    Config: ClassVar[type] = None  # type: ignore[assignment]  # set below to GuardConfig

    def __init__(self, config=None):
        self.config = config if config is not None else type(self).Config()

    def scan(self, text: str, context: ScanContext | None = None) -> Verdict:  # pragma: no cover
        raise NotImplementedError


@dataclass(kw_only=True)
class GuardConfig:
    """Options every guard takes from the policy; each guard extends this with its own fields."""

    action: Action = "block"
    """What the chain does when the guard fires: block, redact (guards that can rewrite text), flag."""
    threshold: float = 0.5
    """Score in [0, 1] at or above which the guard fires."""

    def __post_init__(self):
        if self.action not in ("block", "redact", "flag"):
            raise ValueError(f"action: {self.action!r} is not one of block, redact, flag")
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError(f"threshold: {self.threshold!r} must be in [0, 1]")


def decide(guard: str, cfg: GuardConfig, text: str, score: float, reasons: list[str],
           spans: list[Span] | None = None, redacted: str | None = None) -> Verdict:
    """Turn a guard's finding into a Verdict under the guard's configured action.

    A finding below the threshold is an allow. `redacted` is the text with the finding
    removed, for guards that can rewrite; without it a redact action degrades to block,
    because letting the unredacted text through would be the unsafe default.
    """
    if score < cfg.threshold:
        return Verdict(guard, True, text, score=score, reasons=[], spans=spans or [])
    action: Action = cfg.action
    if action == "redact" and redacted is None:
        action = "block"
    return Verdict(
        guard,
        allowed=action != "block",
        sanitized_text=redacted if action == "redact" else text,
        score=score,
        reasons=reasons,
        spans=spans or [],
        action=action,
    )


Guard.Config = GuardConfig
