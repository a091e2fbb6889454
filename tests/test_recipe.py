"""`d2d run` reruns what changed: a stage is skipped only when its marker's config hash
matches; a changed stage reruns with every stage after it; `force` reruns everything.
Real stages (tokenizer, report: no Ray) on a tiny text file."""

from __future__ import annotations

import json

import pytest

from cluster.recipe import RunConfig, run

TEXT = "To be, or not to be, that is the question.\nWhether 'tis nobler in the mind to suffer.\n\n" * 300


@pytest.fixture
def recipe(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(TEXT)

    def write(vocab: int) -> str:
        p = tmp_path / "recipe.yaml"
        p.write_text(f"stages:\n  tokenizer:\n    input: {corpus}\n    vocab_size: {vocab}\n  report: {{}}\n")
        return str(p)

    return write


def finished(run_dir, stage) -> str:
    return json.loads((run_dir / ".d2d" / f"{stage}.json").read_text())["finished"] + \
        str((run_dir / ".d2d" / f"{stage}.json").stat().st_mtime_ns)


def test_skip_only_on_same_config_and_rerun_everything_after_a_change(recipe, run_dir, capsys):
    run(RunConfig(recipe=recipe(300), run_dir=str(run_dir)))
    first = {s: finished(run_dir, s) for s in ("tokenizer", "report")}
    vocab = json.loads((run_dir / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert len(vocab) <= 300

    capsys.readouterr()
    run(RunConfig(recipe=recipe(300), run_dir=str(run_dir)))
    out = capsys.readouterr().out
    assert out.count("skipped") == 2, out
    assert {s: finished(run_dir, s) for s in first} == first

    run(RunConfig(recipe=recipe(320), run_dir=str(run_dir)))
    out = capsys.readouterr().out
    assert "tokenizer  config changed" in out and "skipped" not in out, out
    assert all(finished(run_dir, s) != first[s] for s in first)
    vocab = json.loads((run_dir / "tokenizer" / "tokenizer.json").read_text())["model"]["vocab"]
    assert 300 < len(vocab) <= 320

    second = {s: finished(run_dir, s) for s in first}
    run(RunConfig(recipe=recipe(320), run_dir=str(run_dir), force=True))
    assert "skipped" not in capsys.readouterr().out
    assert all(finished(run_dir, s) != second[s] for s in first)
