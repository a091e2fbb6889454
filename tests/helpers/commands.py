"""`d2d` command lines found in documents and cluster definitions, checked with the CLI's own parser."""

from __future__ import annotations

import re
import shlex

from cluster.cli import parse_stage_args
from cluster.config import build_config
from cluster.stages import STAGES

SUBMIT_VALUE_FLAGS = {"--address", "--job-id", "--working-dir", "--num-cpus", "--num-gpus"}
JOBS_ACTIONS = {"list", "status", "logs", "stop"}


def d2d_commands(text: str) -> list[list[str]]:
    """Every `d2d ...` command line in a text, comments included (users copy those too)."""
    cmds = []
    for line in text.replace("\\\n", " ").splitlines():
        for m in re.finditer(r"(?:^|[\s(`/])d2d\s+([a-z][^#\n\"`)|;&]*(?:\"[^\"\n]*\"[^#\n\"`)|;&]*)*)", line):
            try:
                cmds.append(shlex.split(m.group(1)))
            except ValueError:
                cmds.append(m.group(1).split())
    return cmds


def stage_argv(argv: list[str]) -> list[str] | None:
    """The stage command line inside `argv` (`submit` flags removed); None for `jobs` commands."""
    if argv[0] == "jobs":
        assert len(argv) > 1 and argv[1] in JOBS_ACTIONS, f"d2d jobs: unknown action in {argv}"
        return None
    if argv[0] != "submit":
        return argv
    out, skip = [], False
    for a in argv[1:]:
        if skip:
            skip = False
        elif a in SUBMIT_VALUE_FLAGS:
            skip = True
        elif a != "--follow" and a.split("=", 1)[0] not in SUBMIT_VALUE_FLAGS:
            out.append(a)
    return out


def check_command(argv: list[str]) -> None:
    """Parse a documented command exactly as `d2d` would and build its config (nothing runs).

    Placeholders in capitals (RUN, JOB_ID, HEAD) are fine: a config only checks types and ranges.
    """
    argv = stage_argv(argv)
    if argv is None:
        return
    stage = argv[0]
    assert stage in STAGES, f"unknown stage {stage!r} in {argv}"
    spec = STAGES[stage]
    cls = spec.load_config_class()
    parsed = parse_stage_args(spec, cls, argv[1:])
    if parsed.help:
        return
    config = parsed.config
    if spec.config_field and config:
        parsed.overrides.setdefault(spec.config_field, config)
        config = None
    build_config(cls, config, parsed.overrides, section=stage)
