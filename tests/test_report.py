"""The report card and `d2d run`: numbers come from the run's files; finished stages are skipped."""

from __future__ import annotations

import json

import pytest

from cluster.cli import main
from cluster.config import ConfigError
from cluster.recipe import RunConfig
from cluster.recipe import run as run_recipe
from pipeline.report import build_report, count_parameters
from pipeline.runfs import RunDir


def _fake_run(root):
    """Artifacts as the stages write them (shapes only; the values are arbitrary)."""
    run = RunDir(root)
    run.write_json("curated/.stats.json", {"docs_in": 37, "docs_out": 11, "stages": {
        "language": {"docs_in": 30, "docs_out": 20, "dropped": {"lang_not_en": 10}},
        "quality": {"docs_in": 20, "docs_out": 11, "dropped": {"gopher_short_doc": 9}}}})
    run.write_json("tokens/manifest.json", {"vocab_size": 321, "seq_len": 64,
                                            "splits": {"train": {"documents": 9, "sequences": 17, "tokens": 1105}}})
    for i in range(5):
        run.append_jsonl("base/metrics.jsonl", {"step": i * 10, "loss": 5.0 - i * 0.731, "lr": 1e-3})
    run.write_json("sft/eval.json", {"val_loss": 1.2345, "stop_rate": 0.9617, "arithmetic_accuracy": 0.4})
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(3, 7), "b": torch.zeros(11)}, run.path("sft/model.safetensors"))
    return run


def test_report_numbers_trace_to_files(tmp_path):
    run = _fake_run(tmp_path / "r")
    md = build_report(run.root)
    assert "| quality | 20 | 11 | gopher_short_doc: 9 |" in md
    assert "| vocab_size | 321 |" in md and "| train.tokens | 1105 |" in md
    assert "| stop_rate | 0.9617 |" in md
    assert "loss=2.076" in md  # 5.0 - 4 * 0.731, the last row
    assert count_parameters(run, "sft") == 3 * 7 + 11
    assert "Parameters: 32" in md
    assert (tmp_path / "r" / "plots" / "base_0.png").stat().st_size > 1000
    assert (tmp_path / "r" / "plots" / "curation_funnel.png").exists()
    assert main(["report", "--run-dir", str(tmp_path / "r")]) == 0
    assert (tmp_path / "r" / "report.md").read_text().startswith("# Report card")


def test_report_compares_the_alignment_chain_on_the_same_problems(tmp_path):
    run = _fake_run(tmp_path / "r")
    chain = [{"model": run.path(n), "accuracy": acc} for n, acc in (("sft", 0.25), ("dpo", 0.2612), ("grpo", 0.5833))]
    run.write_json("grpo/eval.json", {"accuracy_before": 0.2612, "accuracy_after": 0.5833, "chain_accuracy": chain})
    md = build_report(run.root)
    table = md[md.index("Alignment chain ending in `grpo`"):]
    assert "| sft | 0.25 |\n| dpo | 0.2612 |\n| grpo | 0.5833 |" in table
    assert "chain_accuracy" not in md  # shown as the table, not as a raw key


def test_report_guard_section_from_suite_file(tmp_path):
    run = RunDir(tmp_path / "r")
    run.write_json("guard/eval.json", {
        "benign_n": 17, "skipped": ["/d/pii/presidio_generated_small.json"],
        "injection": {"n": 20, "tpr": 0.6667, "fpr": 0.0588, "precision": 0.6667, "recall": 0.6667,
                      "f1": 0.6667, "p50_ms": 1.5, "p95_ms": 2.25}})
    md = build_report(run.root)
    assert "| injection | 20 | 0.6667 | 0.0588 | 0.6667 | 0.6667 | 0.6667 | 1.5 | 2.25 |" in md
    assert "Benign texts for the false-positive rates: 17." in md
    assert "`/d/pii/presidio_generated_small.json`" in md


def test_report_on_missing_run_dir_is_one_line(tmp_path, capsys):
    assert main(["report", "--run-dir", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_recipe_skips_finished_stages_and_force_reruns(tmp_path, capsys):
    _fake_run(tmp_path / "r")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("stages:\n  report: {}\n")
    cfg = RunConfig(recipe=str(recipe), run_dir=str(tmp_path / "r"))
    run_recipe(cfg)
    marker = json.loads((tmp_path / "r" / ".d2d" / "report.json").read_text())
    assert marker["stage"] == "report" and marker["seconds"] >= 0
    (tmp_path / "r" / "report.md").unlink()
    run_recipe(cfg)
    assert "skipped" in capsys.readouterr().out
    assert not (tmp_path / "r" / "report.md").exists()
    # A forced rerun starts over: the stage's own training checkpoints go, no other stage's.
    (tmp_path / "r" / ".ray_train" / "report-train" / "checkpoint_0").mkdir(parents=True)
    (tmp_path / "r" / ".ray_train" / "sft" / "checkpoint_0").mkdir(parents=True)
    run_recipe(RunConfig(recipe=str(recipe), run_dir=str(tmp_path / "r"), force=True))
    assert (tmp_path / "r" / "report.md").exists()
    assert not (tmp_path / "r" / ".ray_train" / "report-train").exists()
    assert (tmp_path / "r" / ".ray_train" / "sft" / "checkpoint_0").exists()
    assert "| report |" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize("body, needle", [
    ("stages:\n  report: {}\n  nosuch: {}\n", "unknown stage 'nosuch'"),
    ("stages:\n  report: {colour: red}\n", "recipe stage 'report': unknown config key 'colour'"),
    ("steps: []\n", "needs a non-empty `stages:`"),
])
def test_bad_recipes_fail_before_any_stage_runs(tmp_path, body, needle):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(body)
    with pytest.raises(ConfigError) as e:
        run_recipe(RunConfig(recipe=str(recipe), run_dir=str(tmp_path / "r")))
    assert needle in str(e.value)
    assert not (tmp_path / "r" / ".d2d").exists()


def test_unknown_recipe_name_lists_shipped_ones(capsys):
    assert main(["run", "--config", "no-such-recipe", "--run-dir", "/tmp/x"]) == 2
    assert "no-such-recipe" in capsys.readouterr().err
