"""Typed stage configs from presets, files and `--set key=value` overrides.

Every stage owns a `@dataclass(kw_only=True)` config whose fields carry a
docstring (the string literal right under the field, as in torchtitan) and whose
`__post_init__` raises `ValueError` naming a bad field. This module turns the
command line into such an object and fails at once, naming the field, when a key
is unknown or a value has the wrong type:

    cfg = build_config(PretrainConfig, "tiny", ["max_steps=50", "lr=3e-4"])

A preset is a name in the config class's `presets` ClassVar (a dict of field
overrides); anything else is a YAML/JSON file whose keys are fields (or which has
a section named after the stage, as in a `d2d run` recipe).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import json
import textwrap
import types
import typing
from functools import cache
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin


class ConfigError(ValueError):
    """Bad configuration: raised at once, with a message that names the field."""


@cache
def field_docs(cls: type) -> dict[str, str]:
    """Map each dataclass field to the docstring written under it (parents included)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for node, nxt in zip(body, body[1:] + [None], strict=True):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def config_fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in get_args(tp))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(tp))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    if tp is type(None):
        return "None"
    return getattr(tp, "__name__", str(tp))


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert `value` (often a string from the command line) to type `tp`, or raise."""
    origin = get_origin(tp)
    bad = ConfigError(f"{name}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(name, arg, value)
            except ConfigError:
                continue
        raise bad
    if origin is Literal:
        allowed = get_args(tp)
        for a in allowed:
            if value == a or (isinstance(value, str) and str(a) == value):
                return a
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(repr(a) for a in allowed)}")
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise bad
    if tp is int:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                try:
                    f = float(value)
                except ValueError:
                    raise bad from None
                if f.is_integer():
                    return int(f)
        raise bad
    if tp is float:
        if isinstance(value, bool):
            raise bad
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                raise bad from None
        raise bad
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad
    if origin in (list, tuple):
        (item_tp, *_) = get_args(tp) or (Any,)
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError:
                    raise bad from None
            else:
                value = [v.strip() for v in text.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise bad
        items = [_coerce(f"{name}[{i}]", item_tp, v) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:  # `dict[str, int]` and a bare `dict` field
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise bad from None
        if not isinstance(value, dict):
            raise bad
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, dict):
            return build_config(tp, overrides=value)
        raise bad
    raise ConfigError(f"{name}: unsupported field type {_type_name(tp)}")


def unknown_key_error(cls: type, key: str) -> ConfigError:
    names = sorted(config_fields(cls))
    close = difflib.get_close_matches(key, names, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(
        f"unknown config key {key!r} for {cls.__name__}{hint}; valid keys: {', '.join(names)}"
    )


def parse_set(items: list[str] | None) -> dict[str, str]:
    """`["a=1", "b.c=x"]` -> `{"a": "1", "b.c": "x"}`; a bare key is rejected."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        k, v = item.split("=", 1)
        out[k.strip().replace("-", "_")] = v
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping of field: value")
    return data


def resolve_base(cls: type, config: str | None, section: str | None = None) -> dict[str, Any]:
    """A preset name or a config file, flattened to field overrides for `cls`."""
    if not config:
        return {}
    presets: dict[str, dict] = getattr(cls, "presets", {}) or {}
    if config in presets:
        return dict(presets[config])
    if not Path(config).suffix and not Path(config).exists():
        raise ConfigError(
            f"--config {config!r}: no such preset for {cls.__name__} "
            f"(presets: {', '.join(sorted(presets)) or 'none'}) and no such file"
        )
    data = load_file(config)
    if section and isinstance(data.get(section), dict):
        data = data[section]
    elif "stages" in data and isinstance(data["stages"], dict):
        data = data["stages"].get(section, {}) or {}
    base = {}
    if "preset" in data:
        base = resolve_base(cls, str(data.pop("preset")))
    base.update(data)
    return base


def build_config(
    cls: type,
    config: str | None = None,
    overrides: dict[str, Any] | list[str] | None = None,
    *,
    section: str | None = None,
):
    """Build and validate `cls` from a preset/file plus overrides. Raises ConfigError."""
    values = resolve_base(cls, config, section)
    if isinstance(overrides, list):
        overrides = parse_set(overrides)
    values.update(overrides or {})
    fields = config_fields(cls)
    hints = _hints(cls)
    kwargs = {}
    for key, raw in values.items():
        key = key.replace("-", "_")
        if key not in fields:
            raise unknown_key_error(cls, key)
        kwargs[key] = _coerce(key, hints[key], raw)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(str(e)) from None


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def describe(cls: type) -> str:
    """Every field with its type, default and meaning: the body of `d2d STAGE --help`."""
    docs = field_docs(cls)
    hints = _hints(cls)
    lines = []
    for name, f in config_fields(cls).items():
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            default = "(required)"
        lines.append(f"  {name} ({_type_name(hints[name])}, default {default!r})")
        if docs.get(name):
            lines.extend("      " + ln for ln in textwrap.wrap(docs[name], 76))
    presets = getattr(cls, "presets", None)
    if presets:
        lines.append("")
        lines.append(f"presets: {', '.join(presets)}")
    return "\n".join(lines)
