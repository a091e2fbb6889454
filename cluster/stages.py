"""The registry of `d2d` stages: name -> config class, run function, whether it needs Ray.

Imports are lazy (strings), so `d2d --help` stays fast and a stage's heavy
dependencies load only when that stage runs. Only stages that work are listed.
A stage's run function takes its config object and returns what it wrote (a path,
or a dict of figures with an `artifacts` key); the CLI prints it.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    summary: str
    config: str
    """`module:Class` of the stage's config dataclass."""
    run: str
    """`module:function` taking the config object."""
    needs_ray: bool = True
    """Connect to Ray (embedded or --address) before calling run."""
    positionals: tuple[str, ...] = ()
    """Config fields filled, in order, by positional arguments (`d2d guard scan "text"`)."""
    config_field: str = ""
    """If set, `--config X` fills this field instead of naming a preset or file (`d2d run --config demo`)."""

    def load_config_class(self) -> type:
        return _load(self.config)

    def load_run(self):
        return _load(self.run)


def _load(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        # Stages register here, in lifecycle order, once they work end to end.
        Stage("report", "write the run's report card RUN/report.md with plots, from its metrics files",
              "pipeline.report:ReportConfig", "pipeline.report:run", needs_ray=False),
        Stage("run", "run a whole lifecycle recipe, skipping finished stages (`d2d run --config demo`)",
              "cluster.recipe:RunConfig", "cluster.recipe:run", config_field="recipe"),
        Stage("bench", "run a stage's benchmark and print its figures (`d2d bench all`)",
              "cluster.bench:BenchConfig", "cluster.bench:run", needs_ray=False,
              positionals=("target",)),
    ]
}
