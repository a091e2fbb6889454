"""The guard policy: which guards run on input and on output, in order, with what options.

    from guardrails.policy import load_policy
    policy = load_policy()                        # the shipped default_policy.yaml
    policy = load_policy("my_policy.yaml")        # or a dict of the same shape

A policy file (YAML) looks like default_policy.yaml beside this module:

    fail_fast: true           # stop a chain at the first block (the default)
    stream: {window_chars: 512, stride_chars: 64}
    input:
      - guard: pii            # a registered guard name
        action: redact        # block | redact | flag
        threshold: 0.4        # the guard's own fields follow
    output: [...]

It is validated on load: an unknown guard, an unknown field, a bad value or a guard
in the wrong list fails at once with a ValueError that names it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guardrails.base import GuardConfig
from guardrails.registry import guard_class

DEFAULT_POLICY = Path(__file__).with_name("default_policy.yaml")
_TOP_LEVEL = ("name", "fail_fast", "stream", "input", "output")


@dataclass(kw_only=True)
class StreamSettings:
    window_chars: int = 512
    """Output guards see the last this-many characters of a streamed reply at each check."""
    stride_chars: int = 64
    """A check runs each time this many new characters have arrived."""

    def __post_init__(self):
        if self.stride_chars < 1:
            raise ValueError("stream.stride_chars must be at least 1")
        if self.window_chars < self.stride_chars:
            raise ValueError("stream.window_chars must be at least stream.stride_chars")


@dataclass
class GuardSpec:
    name: str
    config: GuardConfig


@dataclass
class Policy:
    input: list[GuardSpec] = field(default_factory=list)
    output: list[GuardSpec] = field(default_factory=list)
    fail_fast: bool = True
    stream: StreamSettings = field(default_factory=StreamSettings)
    name: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        def entries(specs):
            return [{"guard": s.name, **dataclasses.asdict(s.config)} for s in specs]

        return {"name": self.name, "fail_fast": self.fail_fast,
                "stream": dataclasses.asdict(self.stream),
                "input": entries(self.input), "output": entries(self.output)}


def _spec(where: str, entry: Any, stage: str) -> GuardSpec:
    if not isinstance(entry, dict) or "guard" not in entry:
        raise ValueError(f"policy {where}: expected a mapping with a 'guard' key, got {entry!r}")
    options = dict(entry)
    name = str(options.pop("guard"))
    try:
        cls = guard_class(name)
    except ValueError as e:
        raise ValueError(f"policy {where}: {e}") from None
    if cls.kind not in (stage, "both"):
        raise ValueError(f"policy {where}: guard {name!r} is an {cls.kind} guard, not an {stage} guard")
    fields = {f.name for f in dataclasses.fields(cls.Config) if f.init}
    for key in options:
        if key not in fields:
            raise ValueError(
                f"policy {where} ({name}): unknown field {key!r}; fields: {', '.join(sorted(fields))}")
    try:
        config = cls.Config(**options)
    except (TypeError, ValueError) as e:
        raise ValueError(f"policy {where} ({name}): {e}") from None
    return GuardSpec(name, config)


def load_policy(path_or_dict: str | Path | dict | None = None) -> Policy:
    """Load and validate a policy from a YAML file or a dict; None gives the shipped default."""
    if path_or_dict is None:
        path_or_dict = DEFAULT_POLICY
    if isinstance(path_or_dict, dict):
        data, name = dict(path_or_dict), str(path_or_dict.get("name", "custom"))
    else:
        import yaml

        path = Path(path_or_dict)
        if not path.exists():
            raise ValueError(f"policy file not found: {path}")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"policy file {path}: top level must be a mapping")
        name = str(data.get("name", path.stem))
    for key in data:
        if key not in _TOP_LEVEL:
            raise ValueError(f"policy: unknown field {key!r}; fields: {', '.join(_TOP_LEVEL)}")
    stream = data.get("stream") or {}
    try:
        stream_cfg = StreamSettings(**stream)
    except TypeError as e:
        raise ValueError(f"policy stream: {e}") from None
    lists = {}
    for stage in ("input", "output"):
        entries = data.get(stage) or []
        if not isinstance(entries, list):
            raise ValueError(f"policy {stage}: expected a list of guards")
        lists[stage] = [_spec(f"{stage}[{i}]", e, stage) for i, e in enumerate(entries)]
    fail_fast = data.get("fail_fast", True)
    if not isinstance(fail_fast, bool):
        raise ValueError(f"policy fail_fast: expected true or false, got {fail_fast!r}")
    return Policy(input=lists["input"], output=lists["output"], fail_fast=fail_fast,
                  stream=stream_cfg, name=name)
