"""Guard names to classes: the policy file names guards, this maps them (no if/elif chain).

    from guardrails.registry import guard_class, GUARDS
    cls = guard_class("injection"); guard = cls(cls.Config(threshold=0.6))

Entries are lazy `module:Class` strings so that a policy without PII never imports Presidio.
`register()` adds a guard of your own.
"""

from __future__ import annotations

import importlib

from guardrails.base import Guard

GUARDS: dict[str, str] = {
    "limits": "guardrails.limits:LimitsGuard",
    "secrets": "guardrails.secrets:SecretsGuard",
    "pii": "guardrails.pii:PiiGuard",
    "injection": "guardrails.injection:InjectionGuard",
    "harmful": "guardrails.harmful:HarmfulGuard",
    "leak": "guardrails.leak:PromptLeakGuard",
}


def register(name: str, ref: str | type) -> None:
    """Add a guard under `name`: a `module:Class` string or the class itself."""
    if name in GUARDS:
        raise ValueError(f"guard {name!r} is already registered")
    GUARDS[name] = ref  # type: ignore[assignment]


def guard_class(name: str) -> type[Guard]:
    if name not in GUARDS:
        raise ValueError(f"unknown guard {name!r}; known guards: {', '.join(sorted(GUARDS))}")
    ref = GUARDS[name]
    if isinstance(ref, type):
        return ref
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)
