"""The d2d command: stage listing, help, and one clear line for every kind of bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cluster.cli import main
from cluster.config import config_fields
from cluster.stages import STAGES

D2D = [sys.executable, "-m", "cluster.cli"]


def test_help_lists_registered_stages_only(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in STAGES:
        assert f"  {name} " in out
    assert "submit" in out and "jobs" in out


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_rejects_an_unknown_key_naming_it(stage, capsys):
    assert main([stage, "--set", "no_such_key=1"]) == 2
    err = capsys.readouterr().err
    assert "no_such_key" in err and err.count("\n") == 1


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_help_documents_every_field(stage, capsys):
    assert main([stage, "--help"]) == 0
    out = capsys.readouterr().out
    cls = STAGES[stage].load_config_class()
    for name in config_fields(cls):
        assert f"  {name} (" in out


def test_field_docstrings_exist_for_every_stage():
    from cluster.config import field_docs

    missing = {
        s: [f for f in config_fields(STAGES[s].load_config_class()) if f not in field_docs(STAGES[s].load_config_class())]
        for s in STAGES
    }
    assert not {s: m for s, m in missing.items() if m}


@pytest.mark.parametrize(
    "argv, code, needle",
    [
        (["nope"], 2, "unknown stage 'nope'"),
        (["bench", "--set", "quick=maybe"], 2, "quick: expected bool"),
        (["bench", "extra", "args"], 2, "unexpected argument"),
        (["bench", "--quick", "--target"], 2, "--target needs a value"),
        (["jobs", "list", "--address", "http://127.0.0.1:9"], 1, "cannot reach"),
        (["submit", "nope", "--address", "http://127.0.0.1:9"], 1, "unknown stage 'nope'"),
    ],
)
def test_bad_input_gives_one_line_and_nonzero_exit(argv, code, needle, capsys):
    assert main(argv) == code
    err = capsys.readouterr().err
    assert needle in err
    assert "Traceback" not in err


def test_console_script_end_to_end():
    r = subprocess.run([*D2D, "bench", "--set", "no_such_key=1"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no_such_key" in r.stderr and "Traceback" not in r.stderr


def _parsed(stage: str, argv: list[str]):
    from cluster.cli import parse_stage_args

    return parse_stage_args(STAGES[stage], STAGES[stage].load_config_class(), argv)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_field_is_an_option_of_the_generated_parser(stage):
    from cluster.cli import stage_parser

    cls = STAGES[stage].load_config_class()
    options = {o for a in stage_parser(STAGES[stage], cls)._actions for o in a.option_strings}
    for name in config_fields(cls):
        assert {f"--{name}", f"--{name.replace('_', '-')}"} <= options


@pytest.mark.parametrize(
    "stage, argv, overrides",
    [
        ("tokenizer", ["--vocab-size", "2048", "--run_dir=/x"], {"vocab_size": "2048", "run_dir": "/x"}),
        ("bench", ["--quick", "curate"], {"quick": "true", "target": "curate"}),
        ("bench", ["--quick", "off", "curate"], {"quick": "off", "target": "curate"}),
        ("bench", ["--no-quick"], {"quick": "false"}),
        # A boolean flag before a positional leaves the positional alone.
        ("guard", ["scan", "--json", "some text", "--stage", "output"],
         {"action": "scan", "text": "some text", "json": "true", "stage": "output"}),
        ("guard", ["scan", "--", "--text that starts with dashes"],
         {"action": "scan", "text": "--text that starts with dashes"}),
        ("tokenizer", ["--set", "vocab_size=512", "--set", "min-frequency=3"], {"vocab_size": "512", "min_frequency": "3"}),
    ],
)
def test_generated_parser_forms(stage, argv, overrides):
    assert _parsed(stage, argv).overrides == overrides


def test_generated_parser_rejects_abbreviations_naming_the_field():
    from cluster.config import ConfigError

    with pytest.raises(ConfigError, match="unknown config key 'vocab'.*did you mean 'vocab_size'"):
        _parsed("tokenizer", ["--vocab", "5"])
