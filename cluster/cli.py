"""`d2d`: one command, a subcommand per lifecycle stage.

    d2d STAGE [--config PRESET_OR_FILE] [--set key=value ...] [--run-dir DIR]
              [--address ADDR] [--FIELD VALUE ...] [POSITIONAL ...]
    d2d submit STAGE [stage options] --address http://HEAD:8265 [--follow]
    d2d jobs list|status|logs|stop [JOB_ID] --address http://HEAD:8265

Every config field is also an option (`--vocab-size 2048` is `--set vocab_size=2048`).
Bad configuration, a missing input or an unreachable cluster prints one line
naming the problem and exits non-zero; set D2D_DEBUG=1 for the traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
import time
import traceback
import types
import typing
from typing import Any

from cluster.config import (
    ConfigError,
    build_config,
    config_fields,
    describe,
    parse_set,
    unknown_key_error,
)
from cluster.stages import STAGES, Stage

USAGE = (
    "usage: d2d STAGE [--config PRESET_OR_FILE] [--set key=value ...] [--run-dir DIR] "
    "[--address ADDR] [--FIELD VALUE ...]\n"
    "       d2d submit STAGE [stage options] --address http://HEAD:8265 [--follow]\n"
    "       d2d jobs list|status|logs|stop [JOB_ID] --address http://HEAD:8265"
)


class UsageError(Exception):
    pass


def _stage_list() -> str:
    lines = [USAGE, "", "stages:"]
    for s in STAGES.values():
        lines.append(f"  {s.name:<10} {s.summary}")
    lines.append(f"  {'submit':<10} run any stage as a Ray job on a cluster (Ray Jobs API)")
    lines.append(f"  {'jobs':<10} list, inspect, follow or stop submitted Ray jobs")
    lines.append("")
    lines.append("d2d STAGE --help lists every config field with its default and meaning.")
    return "\n".join(lines)


def _stage_help(stage: Stage, cls: type) -> str:
    pos = " ".join(p.upper() for p in stage.positionals)
    return (
        f"usage: d2d {stage.name} [--config PRESET_OR_FILE] [--set key=value ...] "
        f"[--address ADDR] [--FIELD VALUE ...] {pos}\n\n{stage.summary}\n\nconfig fields:\n"
        + describe(cls)
    )


@dataclasses.dataclass
class Parsed:
    config: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    address: str | None = None
    help: bool = False


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, our wording) instead of printing and exiting."""

    def error(self, message: str):
        m = re.match(r"argument (\S+?)(?:/\S+)?: expected one argument", message)
        raise UsageError(f"{m.group(1)} needs a value" if m else message)


_BOOL_WORDS = ("true", "false", "1", "0", "yes", "no", "on", "off")


def _is_bool(tp: Any) -> bool:
    return tp is bool or (typing.get_origin(tp) in (typing.Union, types.UnionType) and bool in typing.get_args(tp))


def stage_parser(stage: Stage, cls: type) -> _Parser:
    """The stage's argparse parser, generated from its config dataclass: one option per field
    (`--vocab-size` and `--vocab_size`), `--no-FLAG` for booleans, `--config`, `--set`,
    `--address`, and the stage's positionals. Values stay strings; `build_config` types them."""
    parser = _Parser(prog=f"d2d {stage.name}", add_help=False, allow_abbrev=False)
    parser.add_argument("-h", "--help", action="store_true", dest="_help")
    parser.add_argument("--config", dest="_config")
    parser.add_argument("--set", action="append", default=[], dest="_set")
    parser.add_argument("--address", dest="_address")
    hints = typing.get_type_hints(cls)
    for name in config_fields(cls):
        flags = dict.fromkeys([f"--{name.replace('_', '-')}", f"--{name}"])
        if _is_bool(hints[name]):
            parser.add_argument(*flags, dest=name, nargs="?", const="true", default=argparse.SUPPRESS)
            neg = dict.fromkeys([f"--no-{name.replace('_', '-')}", f"--no_{name}"])
            parser.add_argument(*neg, dest=name, action="store_const", const="false", default=argparse.SUPPRESS)
        else:
            parser.add_argument(*flags, dest=name, default=argparse.SUPPRESS)
    for name in stage.positionals:
        parser.add_argument(f"_pos_{name}", nargs="?", default=argparse.SUPPRESS)
    return parser


def _bool_values_attached(argv: list[str], bool_flags: set[str]) -> list[str]:
    """`--flag VALUE` keeps VALUE only when it is a boolean word, so `--json TEXT` leaves TEXT
    positional: argparse's optional value would swallow any word."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--":
            out.extend(argv[i:])
            break
        if a in bool_flags and i + 1 < len(argv) and argv[i + 1].lower() in _BOOL_WORDS:
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a if a not in bool_flags else f"{a}=true")
        i += 1
    return out


def parse_stage_args(stage: Stage, cls: type, argv: list[str]) -> Parsed:
    """Parse `argv` for `stage`; options name config fields, positionals fill stage.positionals."""
    parser = stage_parser(stage, cls)
    hints = typing.get_type_hints(cls)
    bool_flags = {f"--{n}" for n in config_fields(cls) if _is_bool(hints[n])}
    bool_flags |= {f.replace("_", "-") for f in bool_flags}
    ns, rest = parser.parse_known_intermixed_args(_bool_values_attached(argv, bool_flags))
    for arg in rest:
        if arg.startswith("--"):
            raise unknown_key_error(cls, arg[2:].split("=", 1)[0].replace("-", "_"))
    if rest:
        raise UsageError(f"unexpected argument(s): {' '.join(a for a in rest if a != '--')}")
    values = vars(ns)
    out = Parsed(config=values.pop("_config"), address=values.pop("_address"), help=values.pop("_help"))
    sets = values.pop("_set")
    for name in stage.positionals:
        if f"_pos_{name}" in values:
            out.overrides[name] = values.pop(f"_pos_{name}")
    out.overrides.update(values)
    out.overrides.update(parse_set(sets))
    return out


def _print_result(result: Any) -> None:
    if result is None:
        return
    if isinstance(result, (str, os.PathLike)):
        print(f"artifacts: {result}")
    elif isinstance(result, dict):
        print(json.dumps(result, indent=2, default=str))
    else:
        print(result)


def run_stage(name: str, argv: list[str]) -> int:
    if name not in STAGES:
        raise UsageError(f"unknown stage {name!r}; stages: {', '.join(STAGES) or 'none'}")
    stage = STAGES[name]
    cls = stage.load_config_class()
    parsed = parse_stage_args(stage, cls, argv)
    if parsed.help:
        print(_stage_help(stage, cls))
        return 0
    if stage.config_field and parsed.config:
        parsed.overrides.setdefault(stage.config_field, parsed.config)
        parsed.config = None
    cfg = absolute_paths(build_config(cls, parsed.config, parsed.overrides, section=name))
    if stage.needs_ray:
        from cluster.runtime import connect

        connect(parsed.address, **_ray_sizing(cfg))
    else:
        from cluster.runtime import set_process_env

        set_process_env()
    started = time.time()
    result = stage.load_run()(cfg)
    _print_result(result)
    print(f"[d2d {name}] done in {time.time() - started:.1f}s", file=sys.stderr)
    return 0


PATH_FIELDS = ("init", "model", "reward_model", "tokenizer")


def absolute_paths(cfg: Any) -> Any:
    """Local relative paths made absolute where the stage runs: Ray workers and Serve replicas
    do not share the driver's working directory. `run_dir` always; the other path fields only
    when they name something that exists (`model` may also be a preset name)."""
    changes = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if not isinstance(value, str) or not value or "://" in value or os.path.isabs(value):
            continue
        if f.name == "run_dir" or (f.name in PATH_FIELDS and os.path.exists(value)):
            changes[f.name] = os.path.abspath(value)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _ray_sizing(cfg: Any) -> dict:
    """Embedded Ray's size may come from config (`ray_num_cpus`), else the machine."""
    n = getattr(cfg, "ray_num_cpus", None)
    return {"num_cpus": n} if n else {}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_stage_list())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    try:
        if name == "submit":
            from cluster.jobs import submit_main

            return submit_main(rest)
        if name == "jobs":
            from cluster.jobs import jobs_main

            return jobs_main(rest)
        return run_stage(name, rest)
    except KeyboardInterrupt:
        print(f"d2d {name}: interrupted", file=sys.stderr)
        return 130
    except (ConfigError, UsageError) as e:
        print(f"d2d {name}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - one line for the user, traceback on demand
        from pipeline.errors import StageError

        if os.environ.get("D2D_DEBUG"):
            traceback.print_exc()
        kind = "" if isinstance(e, (StageError, ConnectionError, FileNotFoundError)) else f"{type(e).__name__}: "
        print(f"d2d {name}: error: {kind}{e}", file=sys.stderr)
        if kind and not os.environ.get("D2D_DEBUG"):
            print("  (set D2D_DEBUG=1 for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
