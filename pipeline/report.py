"""The run's report card: `RUN/report.md` with PNG plots, every number read from the run's files.

    d2d report --run-dir runs/demo

Sections appear for the artifacts that exist: curation funnel (curated/.stats.json),
tokenizer and tokens (tokenizer/stats.json, tokens/manifest.json), each model folder's
size, loss curves (metrics.jsonl) and evaluation (eval.json), guard evaluation
(guard/eval.json), and stage times and config hashes (.d2d/*.json markers of `d2d run`).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.runfs import RunDir

MODEL_STAGES = ["base", "sft", "reward", "ppo", "dpo", "grpo"]
#: metrics.jsonl keys plotted per model folder, when present (first found wins per panel).
CURVES = [
    ("loss", "val_loss"),
    ("reward_mean", "kl"),
    ("margin", "accuracy"),
    ("accuracy",),
]


@dataclass(kw_only=True)
class ReportConfig:
    run_dir: str = "runs/default"
    """The run directory to summarise; report.md and plots/ are written into it."""


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3e}"
        return f"{v:.4g}"
    return str(v)


def read_metrics(run: RunDir, rel: str) -> list[dict]:
    """metrics.jsonl rows; a line cut short by a killed writer is skipped."""
    if not run.exists(rel):
        return []
    rows = []
    for line in run.read_text(rel).splitlines():
        try:
            rows.append(json.loads(line)) if line.strip() else None
        except json.JSONDecodeError:
            continue
    return rows


def count_parameters(run: RunDir, stage: str) -> int | None:
    """Parameters of a saved model, from the safetensors headers (no weights loaded)."""
    files = run.glob(f"{stage}/*.safetensors")
    if not files:
        return None
    total = 0
    for f in files:
        with run.fs.open(run.fs._strip_protocol(f), "rb") as fh:
            n = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(n))
        for name, meta in header.items():
            if name != "__metadata__":
                total += math.prod(meta["shape"])
    return total


def _plot(rows: list[dict], keys: tuple[str, ...], title: str, out: Path) -> bool:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {k: [(r["step"], r[k]) for r in rows if k in r and "step" in r and r[k] is not None] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return False
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for k, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], label=k, marker="." if len(pts) < 30 else None)
    ax.set_xlabel("step")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return True


CURATION_ORDER = ("read", "url_filter", "extract", "language", "gopher_repetition", "gopher_quality", "c4_quality",
                  "fineweb_quality", "content_safety", "exact_dedup", "near_dedup", "pii")


def _funnel(stats: dict, out: Path) -> list[str]:
    """Curation funnel: documents in/out per step and the drop reasons."""
    steps = stats.get("stages") or stats.get("steps") or {}
    if isinstance(steps, list):
        steps = {s.get("name", str(i)): s for i, s in enumerate(steps)}
    # Pipeline order: documents only ever leave, so more in (then more out) comes first.
    order = {n: i for i, n in enumerate(CURATION_ORDER)}
    steps = {k: v for k, v in steps.items() if isinstance(v, dict)}
    steps = dict(sorted(steps.items(), key=lambda kv: (-(kv[1].get("docs_in") or 0), -(kv[1].get("docs_out") or 0),
                                                       order.get(kv[0], len(order)))))
    lines = ["| step | docs in | docs out | dropped (by reason) |", "|---|---|---|---|"]
    names, outs = [], []
    for name, s in steps.items():
        d_in = s.get("docs_in", s.get("in", ""))
        d_out = s.get("docs_out", s.get("out", ""))
        reasons = s.get("dropped") or s.get("reasons") or {}
        why = ", ".join(f"{k}: {v}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])) if isinstance(reasons, dict) else str(reasons)
        lines.append(f"| {name} | {d_in} | {d_out} | {why} |")
        if isinstance(d_out, (int, float)):
            names.append(name)
            outs.append(d_out)
    if names:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 0.4 * len(names) + 1))
        ax.barh(names[::-1], outs[::-1], color="#4a7")
        ax.set_xlabel("documents kept after step")
        ax.set_title("curation funnel")
        fig.tight_layout()
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=90)
        plt.close(fig)
        lines.append("")
        lines.append(f"![curation funnel]({out.parent.name}/{out.name})")
    return lines


def _kv_table(d: dict, skip=()) -> list[str]:
    rows = ["| figure | value |", "|---|---|"]
    for k, v in d.items():
        if k in skip or isinstance(v, (dict, list)):
            continue
        rows.append(f"| {k} | {_fmt(v)} |")
    return rows


def _guard_section(ev: dict) -> list[str]:
    """Detection rows (anything with a tpr), the PII span line, and the sets that were missing."""
    md = ["## Guardrails", "", "From `guard/eval.json` (`d2d guard suite`: held-out public sets, never trained on).", ""]
    guards = ev.get("guards", ev)
    metrics = ["n", "tpr", "fpr", "precision", "recall", "f1", "p50_ms", "p95_ms"]
    rows = {g: m for g, m in guards.items() if isinstance(m, dict) and "tpr" in m}
    if rows:
        md += ["| guard | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
        md += [f"| {g} | " + " | ".join(_fmt(m.get(k, "")) for k in metrics) + " |" for g, m in rows.items()]
        md.append("")
    if "benign_n" in ev:
        md += [f"Benign texts for the false-positive rates: {ev['benign_n']}.", ""]
    pii = ev.get("pii")
    if isinstance(pii, dict):
        md += [f"PII spans on {pii.get('n')} texts: structured recall {_fmt(pii.get('structured_recall'))}, "
               f"person recall {_fmt(pii.get('person_recall'))}, p50 {_fmt(pii.get('p50_ms'))} ms.", ""]
    if ev.get("skipped"):
        md += ["Not evaluated (files absent): " + ", ".join(f"`{p}`" for p in ev["skipped"]) + ".", ""]
    return md


def build_report(run_dir: str) -> str:
    run = RunDir(run_dir)
    if not run.exists():
        from pipeline.errors import StageError

        raise StageError(f"run directory {run.root} does not exist")
    local = Path(run.root) if "://" not in run.root else Path("report_plots")
    plots = local / "plots"
    md = [f"# Report card: {Path(run.root).name}", "",
          f"Generated {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} from the files in `{run.root}`.", ""]

    if run.exists("curated/.stats.json"):
        stats = run.read_json("curated/.stats.json")
        md += ["## Curation", "", "From `curated/.stats.json`.", ""]
        md += _funnel(stats, plots / "curation_funnel.png")
        md += [""] + _kv_table(stats.get("summary") or {k: v for k, v in stats.items() if not isinstance(v, (dict, list))})
        md += [""]

    tok_rows = {}
    if run.exists("tokenizer/stats.json"):
        tok_rows.update({f"tokenizer.{k}": v for k, v in run.read_json("tokenizer/stats.json").items()})
    if run.exists("tokens/manifest.json"):
        man = run.read_json("tokens/manifest.json")
        tok_rows.update({k: man[k] for k in ("vocab_size", "seq_len") if k in man})
        for split, s in (man.get("splits") or {}).items():
            for k in ("documents", "sequences", "tokens"):
                if k in s:
                    tok_rows[f"{split}.{k}"] = s[k]
    if tok_rows:
        md += ["## Tokenizer and tokens", "", "From `tokenizer/stats.json` and `tokens/manifest.json`.", ""]
        md += _kv_table(tok_rows) + [""]

    for stage in MODEL_STAGES:
        if not run.exists(stage):
            continue
        md += [f"## `{stage}/`", ""]
        params = count_parameters(run, stage)
        if params:
            md.append(f"Parameters: {params:,} (from the safetensors headers).")
            md.append("")
        rows = read_metrics(run, f"{stage}/metrics.jsonl")
        if rows:
            last = rows[-1]
            md.append(f"`metrics.jsonl`: {len(rows)} rows; last: " + ", ".join(
                f"{k}={_fmt(v)}" for k, v in last.items() if isinstance(v, (int, float)) and not isinstance(v, bool)))
            md.append("")
            for i, keys in enumerate(CURVES):
                png = plots / f"{stage}_{i}.png"
                if _plot(rows, keys, f"{stage}: {', '.join(keys)}", png):
                    md += [f"![{stage} {', '.join(keys)}](plots/{png.name})", ""]
        if run.exists(f"{stage}/eval.json"):
            ev = run.read_json(f"{stage}/eval.json")
            md += _chain_section(stage, ev.pop("chain_accuracy", None))
            md += [f"Evaluation (`{stage}/eval.json`):", ""] + _kv_table(ev) + [""]

    if run.exists("guard/eval.json"):
        md += _guard_section(run.read_json("guard/eval.json"))

    markers = run.glob(".d2d/*.json")
    if markers:
        md += ["## Stage times", "", "| stage | seconds | config hash | finished |", "|---|---|---|---|"]
        total = 0.0
        # In the order the stages finished (the recipe's order), not by file name.
        done = sorted((run.read_json(".d2d/" + Path(m).name) for m in markers), key=lambda d: str(d.get("finished")))
        for d in done:
            total += d.get("seconds", 0)
            md.append(f"| {d.get('stage')} | {d.get('seconds')} | {d.get('config_hash')} | {d.get('finished')} |")
        md += [f"| total | {total:.1f} | | |", ""]

    md += ["## Versions", "", _versions(), ""]
    return "\n".join(md)


def _chain_section(stage: str, chain: list[dict] | None) -> list[str]:
    """The alignment chain that ends in `stage`, every model on the same held-out problems."""
    if not chain:
        return []
    md = [f"Alignment chain ending in `{stage}`: held-out accuracy of each model on the same problems "
          f"(`{stage}/eval.json`).", "", "| model | held-out accuracy |", "|---|---|"]
    md += [f"| {Path(str(c['model'])).name} | {_fmt(c['accuracy'])} |" for c in chain]
    return md + [""]


def _versions() -> str:
    import importlib.metadata as im

    parts = [f"python {platform.python_version()}", platform.machine()]
    for pkg in ("ray", "torch", "transformers", "tokenizers", "presidio-analyzer"):
        try:
            parts.append(f"{pkg} {im.version(pkg)}")
        except im.PackageNotFoundError:
            pass
    return ", ".join(parts)


def run(cfg: ReportConfig) -> str:
    text = build_report(cfg.run_dir)
    return RunDir(cfg.run_dir).write_text("report.md", text)
