"""`d2d bench TARGET`: each stage's benchmark, printed as a table and written to JSON.

    d2d bench curate --run-dir bench
    d2d bench all --run-dir bench          # what `make bench` runs

A benchmark is a function `run_bench(out_dir: str, quick: bool) -> dict`, one module per
target in cluster/benchmarks/ (comparison-only dependencies come with the `bench` extra). The dict maps figure names to numbers (or nested dicts) and
names its reference under "reference" and the ratio to it where there is one.
Benchmarks are never timed tests: they print figures for the README.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from cluster.stages import _load

#: target -> "module:function"; each stage adds its own line.
BENCHES: dict[str, str] = {
    "curate": "cluster.benchmarks.curate:run_bench",
    "tokenize": "cluster.benchmarks.tokenize:run_bench",
    "pretrain": "cluster.benchmarks.pretrain:run_bench",
    "guard": "cluster.benchmarks.guard:run_bench",
    "serve": "cluster.benchmarks.serve:run_bench",
    "gpu": "cluster.benchmarks.gpu:run_bench",  # skips cleanly without CUDA
}


@dataclass(kw_only=True)
class BenchConfig:
    target: str = "all"
    """Which benchmark: one of the registered targets, or `all`."""
    run_dir: str = "bench"
    """Where figures are written: RUN_DIR/TARGET.json, RUN_DIR/results.json and results.md."""
    quick: bool = False
    """Smaller inputs (for a smoke run); published figures use quick=false."""

    def __post_init__(self):
        if self.target != "all" and self.target not in BENCHES:
            raise ValueError(f"target: {self.target!r} is not one of all, {', '.join(BENCHES)}")


def _flat(prefix: str, obj, rows: list):
    if isinstance(obj, dict):
        for k, v in obj.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, rows)
    else:
        rows.append((prefix, obj))


def machine() -> str:
    import os

    return f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}"


def run(cfg: BenchConfig) -> dict:
    out = Path(cfg.run_dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = list(BENCHES) if cfg.target == "all" else [cfg.target]
    results = {}
    results_path = out / "results.json"
    if results_path.exists():
        results = json.loads(results_path.read_text()).get("results", {})
    for t in targets:
        started = time.time()
        print(f"[bench {t}] running ...", flush=True)
        figures = _load(BENCHES[t])(str(out / t), cfg.quick)
        figures["wall_s"] = round(time.time() - started, 1)
        (out / f"{t}.json").write_text(json.dumps(figures, indent=2, default=str))
        results[t] = figures
        rows: list = []
        _flat("", figures, rows)
        for k, v in rows:
            print(f"  {t:<10} {k:<48} {v}")
    doc = {"machine": machine(), "time": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "results": results}
    results_path.write_text(json.dumps(doc, indent=2, default=str))
    md = [f"Machine: {doc['machine']}; {doc['time']}", "", "| benchmark | figure | value |", "|---|---|---|"]
    for t, figs in results.items():
        rows = []
        _flat("", figs, rows)
        md += [f"| {t} | {k} | {v} |" for k, v in rows]
    (out / "results.md").write_text("\n".join(md) + "\n")
    return {"artifacts": str(results_path)}
