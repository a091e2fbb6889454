"""The guide works as written: every `d2d` command in README.md and docs/ parses with the CLI's own
parser into a valid config, and the blocks marked runnable run on a fresh clone."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.commands import check_command, d2d_commands

ROOT = Path(__file__).resolve().parent.parent
GUIDE = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
GUIDE = [p for p in GUIDE if "experiments" not in p.parts]  # dated logs quote old command lines
RUNNABLE = re.compile(r"<!-- runnable -->\s*```bash\n(.*?)```", re.S)


def shell_blocks(text: str) -> list[str]:
    return re.findall(r"```(?:bash|sh|console)[^\n]*\n(.*?)```", text, re.S)


def test_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 260
    assert not re.search(r"20\d\d-\d\d-\d\d \d\d:\d\d UTC", "\n".join(lines)), "dated run logs belong in docs/experiments"


@pytest.mark.parametrize("path", GUIDE, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_documented_command_parses(path):
    for block in shell_blocks(path.read_text()):
        commands = "\n".join(line.split(" #")[0] for line in block.splitlines())  # a comment is prose
        for argv in d2d_commands(commands):
            check_command(argv)


def test_every_stage_has_a_page_in_the_docs():
    from cluster.stages import STAGES

    text = "\n".join(p.read_text() for p in GUIDE)
    missing = [s for s in STAGES if f"d2d {s}" not in text]
    assert not missing


def _runnable_lines() -> list[str]:
    lines = []
    for path in GUIDE:
        for block in RUNNABLE.findall(path.read_text()):
            lines += [ln.split(" #")[0].strip() for ln in block.splitlines() if ln.strip() and not ln.startswith("#")]
    return lines


@pytest.mark.parametrize("line", _runnable_lines())
def test_runnable_commands_run(line):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run(line, shell=True, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, (line, r.stdout[-2000:], r.stderr[-2000:])
