"""Secrets: API keys, tokens, private keys and passwords, by provider patterns plus entropy.

    .venv/bin/d2d guard scan "my key is AKIAIOSFODNN7EXAMPLE" --guards secrets

Provider patterns (AWS, GitHub, GitLab, Slack, Stripe, OpenAI/Anthropic, Google,
Hugging Face, npm, SendGrid, JWT, PEM private keys, URLs with passwords) score 1.0.
A generic `api_key = ...` / `password: ...` assignment counts when its value looks
random (Shannon entropy >= `min_entropy` bits/char), and a bare long random token counts
at `entropy_score`. Redaction replaces only the secret value with `<SECRET:kind>`;
reasons name the kind, never the value.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

from guardrails.base import Guard, GuardConfig, ScanContext, Span, Verdict, decide

# (kind, pattern, group holding the secret value: 0 = whole match)
PATTERNS: list[tuple[str, re.Pattern, int]] = [
    ("private_key", re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|\Z)"), 0),
    ("aws_access_key_id", re.compile(r"\b(?:AKIA|ASIA|ABIA|ACCA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b"), 0),
    ("aws_secret_access_key", re.compile(r"(?i)aws.{0,25}?(?:secret|private).{0,25}?[\s:=\"']+([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+])"), 1),
    ("github_token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})\b"), 0),
    ("gitlab_token", re.compile(r"\bglpat-[A-Za-z0-9_\-]{20,}"), 0),
    ("slack_token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"), 0),
    ("slack_webhook", re.compile(r"https://hooks\.slack\.com/services/[A-Za-z0-9/]{20,}"), 0),
    ("stripe_key", re.compile(r"\b[rsp]k_(?:live|test)_[A-Za-z0-9]{16,}\b"), 0),
    ("openai_or_anthropic_key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-|ant-[a-z0-9]+-)?[A-Za-z0-9_\-]{20,}"), 0),
    ("google_api_key", re.compile(r"\bAIza[0-9A-Za-z_\-]{35}"), 0),
    ("huggingface_token", re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"), 0),
    ("npm_token", re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"), 0),
    ("sendgrid_key", re.compile(r"\bSG\.[A-Za-z0-9_\-]{22}\.[A-Za-z0-9_\-]{43}\b"), 0),
    ("azure_storage_key", re.compile(r"(?i)AccountKey=([A-Za-z0-9+/=]{60,})"), 1),
    ("jwt", re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"), 0),
    # The scheme is bounded: unbounded, it rescans a whole dotted run ("print.print....")
    # from every word start in it (quadratic).
    ("url_password", re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]{0,31}://[^\s:/@]+:([^\s@/]{3,})@[^\s/]+"), 1),
]
ASSIGNMENT = re.compile(
    r"(?i)\b(?:api[_\-]?key|apikey|secret(?:[_\-]?key)?|access[_\-]?token|auth[_\-]?token|token|"
    r"client[_\-]?secret|passw(?:or)?d|passwd|pwd|private[_\-]?key)\b[\"']?\s*(?:[:=]|=>|\bis\b)\s*[\"']?([^\s\"',;]{6,})")
TOKEN = re.compile(r"(?<![A-Za-z0-9+/_\-])[A-Za-z0-9+/_\-]{32,}={0,2}(?![A-Za-z0-9+/_\-])")


def entropy(s: str) -> float:
    """Shannon entropy in bits per character."""
    if not s:
        return 0.0
    n = len(s)
    return -sum(c / n * math.log2(c / n) for c in Counter(s).values())


def _looks_random(s: str, min_entropy: float) -> bool:
    classes = sum(bool(re.search(p, s)) for p in (r"[a-z]", r"[A-Z]", r"[0-9]"))
    return classes >= 2 and entropy(s) >= min_entropy


@dataclass(kw_only=True)
class SecretsConfig(GuardConfig):
    action: str = "redact"
    """What the chain does when a secret is found: redact (default), block or flag."""
    min_entropy: float = 3.0
    """Bits per character a value after `api_key=`/`password:` needs to count as a secret."""
    entropy_score: float = 0.6
    """Score of a bare long random token (no provider pattern, no key name); below threshold = ignored."""
    token_min_entropy: float = 4.2
    """Bits per character a bare token of 32+ characters needs to count."""

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.entropy_score <= 1.0:
            raise ValueError("entropy_score must be in [0, 1]")


def find_secrets(text: str, cfg: SecretsConfig) -> list[Span]:
    found: list[Span] = []

    def add(start: int, end: int, kind: str, score: float):
        if any(s.start < end and start < s.end for s in found):
            return
        found.append(Span(start, end, kind, score))

    for kind, pattern, group in PATTERNS:
        for m in pattern.finditer(text):
            add(m.start(group), m.end(group), kind, 1.0)
    for m in ASSIGNMENT.finditer(text):
        value = m.group(1)
        password = "pass" in m.group(0).lower() or "pwd" in m.group(0).lower()
        if password or _looks_random(value, cfg.min_entropy):
            add(m.start(1), m.end(1), "password" if password else "generic_secret", 0.9)
    for m in TOKEN.finditer(text):
        if _looks_random(m.group(0), cfg.token_min_entropy):
            add(m.start(), m.end(), "high_entropy_token", cfg.entropy_score)
    return sorted(found, key=lambda s: s.start)


def redact_spans(text: str, spans: list[Span], fmt: str = "<SECRET:{label}>") -> str:
    out, last = [], 0
    for s in sorted(spans, key=lambda s: s.start):
        out.append(text[last:s.start])
        out.append(fmt.format(label=s.label))
        last = s.end
    out.append(text[last:])
    return "".join(out)


class SecretsGuard(Guard):
    name = "secrets"
    kind = "both"
    Config = SecretsConfig

    def scan(self, text: str, context: ScanContext | None = None) -> Verdict:
        c: SecretsConfig = self.config
        spans = [s for s in find_secrets(text, c) if s.score >= c.threshold]
        if not spans:
            return Verdict(self.name, True, text)
        kinds = Counter(s.label for s in spans)
        reasons = [f"secrets: {k} x{n}" for k, n in sorted(kinds.items())]
        return decide(self.name, c, text, max(s.score for s in spans), reasons, spans,
                      redacted=redact_spans(text, spans))
