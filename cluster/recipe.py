"""`d2d run`: a whole lifecycle recipe, stage after stage, on one Ray connection.

    d2d run --config demo --run-dir runs/demo          # the shipped demo recipe
    d2d run --config my_recipe.yaml --run-dir s3://bucket/runs/x --address auto

A recipe is YAML with an ordered `stages:` mapping; each key is a `d2d` stage and
its value that stage's config fields (a `preset:` key picks a preset first).
`{run_dir}` in a string value is replaced by the run directory. A stage that
finished before (marker `RUN/.d2d/STAGE.json`, written only after success) with the
same config (the marker's `config_hash`) is skipped unless `force`; so a second
`make demo` goes straight to serving. A stage whose config changed reruns from
scratch, and so does every stage after it (they consume its output). A stage
interrupted mid-way resumes from its last checkpoint on the next run; `force` starts it over.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from cluster.config import ConfigError, build_config, to_dict
from cluster.stages import STAGES

RECIPES = Path(__file__).parent / "recipes"


@dataclass(kw_only=True)
class RunConfig:
    recipe: str = "demo"
    """A recipe name shipped in cluster/recipes/ (demo, gpu_small) or a path to a recipe YAML."""
    run_dir: str = "runs/default"
    """The run directory every stage reads and writes (local path or s3:// URI)."""
    only: list[str] = field(default_factory=list)
    """Run just these stages of the recipe (comma-separated); empty runs all."""
    force: bool = False
    """Rerun stages even when their completion marker exists, from scratch: their training
    checkpoints (RUN/.ray_train/OUT, OUT-train) are removed first, so nothing resumes."""
    ray_num_cpus: int | None = None
    """CPUs of the embedded local Ray (none: the whole machine). Ignored with --address."""

    def __post_init__(self):
        recipe_path(self.recipe)


def recipe_path(name: str) -> Path:
    p = Path(name)
    if p.suffix in (".yaml", ".yml") and p.exists():
        return p
    shipped = RECIPES / f"{name}.yaml"
    if shipped.exists():
        return shipped
    names = ", ".join(sorted(q.stem for q in RECIPES.glob("*.yaml")))
    raise ConfigError(f"recipe: {name!r} is neither a file nor a shipped recipe ({names})")


def load_recipe(name: str) -> dict[str, dict]:
    path = recipe_path(name)
    data = yaml.safe_load(path.read_text()) or {}
    stages = data.get("stages")
    if not isinstance(stages, dict) or not stages:
        raise ConfigError(f"recipe {path}: needs a non-empty `stages:` mapping")
    for stage in stages:
        if stage not in STAGES or stage in ("run", "bench"):
            raise ConfigError(f"recipe {path}: unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return {k: dict(v or {}) for k, v in stages.items()}


def _substitute(values: dict, run_dir: str) -> dict:
    return {k: (v.replace("{run_dir}", run_dir) if isinstance(v, str) else v) for k, v in values.items()}


def stage_configs(recipe: dict[str, dict], run_dir: str) -> dict[str, object]:
    """Validate every stage's config up front: a typo in the last stage fails before the first runs."""
    out = {}
    for name, values in recipe.items():
        cls = STAGES[name].load_config_class()
        values = _substitute(values, run_dir)
        preset = values.pop("preset", None)
        if "run_dir" in {f for f in cls.__dataclass_fields__}:
            values.setdefault("run_dir", run_dir)
        try:
            out[name] = build_config(cls, preset, values)
        except ConfigError as e:
            raise ConfigError(f"recipe stage {name!r}: {e}") from None
    return out


def _hash(cfg) -> str:
    return hashlib.sha256(json.dumps(to_dict(cfg), sort_keys=True, default=str).encode()).hexdigest()[:12]


def clear_checkpoints(run_dir, name: str, stage_cfg) -> list[str]:
    """Remove a stage's Ray Train checkpoints (named after its `out` folder, else the stage)."""
    out = getattr(stage_cfg, "out", None) or name
    gone = [d for d in (f".ray_train/{out}", f".ray_train/{out}-train") if run_dir.exists(d)]
    for d in gone:
        run_dir.remove(d)
    return gone


def run(cfg: RunConfig) -> dict:
    from pipeline.runfs import RunDir

    recipe = load_recipe(cfg.recipe)
    if cfg.only:
        unknown = [s for s in cfg.only if s not in recipe]
        if unknown:
            raise ConfigError(f"only: {', '.join(unknown)} not in the recipe ({', '.join(recipe)})")
        recipe = {k: v for k, v in recipe.items() if k in cfg.only}
    configs = stage_configs(recipe, cfg.run_dir)
    run_dir = RunDir(cfg.run_dir)
    total = time.time()
    summary = {}
    rerun_rest = False
    for i, (name, stage_cfg) in enumerate(configs.items(), 1):
        marker = f".d2d/{name}.json"
        head = f"[{i}/{len(configs)}] {name:<10}"
        done = run_dir.read_json(marker) if run_dir.exists(marker) else None
        changed = done is not None and done.get("config_hash") != _hash(stage_cfg)
        if done is not None and not (cfg.force or changed or rerun_rest):
            print(f"{head} skipped (done {done.get('finished', '?')}, same config; --force reruns)", flush=True)
            summary[name] = "skipped"
            continue
        if changed:
            print(f"{head} config changed since {done.get('finished', '?')}: rerunning it and every later stage",
                  flush=True)
        if cfg.force or done is not None:
            # A forced, changed or downstream-of-a-rerun stage starts over: its checkpoints belong
            # to old inputs. Without a marker (killed mid-way) they are kept and the stage resumes.
            clear_checkpoints(run_dir, name, stage_cfg)
        # Every later stage reads this one's new output, so none of them may be skipped.
        rerun_rest = True
        print(f"{head} running ...", flush=True)
        started = time.time()
        result = STAGES[name].load_run()(stage_cfg)
        elapsed = time.time() - started
        run_dir.write_json(marker, {
            "stage": name,
            "seconds": round(elapsed, 1),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": to_dict(stage_cfg),
            "config_hash": _hash(stage_cfg),
        })
        print(f"{head} done in {elapsed:.1f}s", flush=True)
        summary[name] = result if isinstance(result, (str, dict)) else "done"
    print(f"[d2d run] {len(configs)} stages in {time.time() - total:.1f}s -> {run_dir.root}", file=sys.stderr)
    return {"artifacts": run_dir.root, "stages": list(summary)}
