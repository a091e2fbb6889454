"""Limits: length, broken encoding, control characters and hidden (invisible, bidi, tag) characters.

    .venv/bin/d2d guard scan "text" --guards limits

Hidden characters are how instructions are smuggled past a human reviewer (zero-width
joiners, bidi overrides that reorder what is shown, Unicode tag characters that spell
ASCII invisibly); U+FFFD and lone surrogates mean the text was decoded wrongly upstream.
Redact strips the offending characters and cuts the text to `max_chars`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guardrails.base import Guard, GuardConfig, ScanContext, Verdict, decide

CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
INVISIBLE = re.compile(r"[\u00ad\u180e\u200b-\u200f\u2028\u2029\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\ufe00-\ufe0f]")
TAGS = re.compile(r"[\U000e0000-\U000e007f]")
BROKEN = re.compile(r"[\ufffd\ud800-\udfff]")


@dataclass(kw_only=True)
class LimitsConfig(GuardConfig):
    max_chars: int = 32000
    """Longest text accepted, in characters."""
    max_control_chars: int = 0
    """C0/C1 control characters allowed (tab, newline and carriage return never count)."""
    max_invisible_chars: int = 8
    """Zero-width, bidi-control and variation-selector characters allowed (emoji use a few)."""
    max_broken_chars: int = 0
    """U+FFFD replacement characters and lone surrogates allowed (signs of a bad decode)."""

    def __post_init__(self):
        super().__post_init__()
        for name in ("max_chars", "max_control_chars", "max_invisible_chars", "max_broken_chars"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.max_chars == 0:
            raise ValueError("max_chars must be at least 1")


class LimitsGuard(Guard):
    name = "limits"
    kind = "both"
    Config = LimitsConfig

    def scan(self, text: str, context: ScanContext | None = None) -> Verdict:
        c: LimitsConfig = self.config
        reasons = []
        if len(text) > c.max_chars:
            reasons.append(f"limits: {len(text)} chars > max_chars {c.max_chars}")
        checks = [(CONTROL, c.max_control_chars, "control characters"),
                  (INVISIBLE, c.max_invisible_chars, "invisible/bidi characters"),
                  (BROKEN, c.max_broken_chars, "broken encoding (U+FFFD or lone surrogates)"),
                  (TAGS, 0, "Unicode tag characters (hidden ASCII)")]
        for pattern, limit, what in checks:
            n = len(pattern.findall(text))
            if n > limit:
                reasons.append(f"limits: {n} {what} > {limit}")
        if not reasons:
            return Verdict(self.name, True, text)
        cleaned = text
        for pattern, _, _ in checks:
            cleaned = pattern.sub("", cleaned)
        return decide(self.name, c, text, 1.0, reasons, redacted=cleaned[: c.max_chars])
