"""PII guard evaluation: presidio-research style span matching, precision/recall per entity type.

    .venv/bin/python -m guardrails.pii_eval --faker 1500 --seed 2 --templates heldout

Sets: presidio-research's `presidio_generated_small.json` (from `--data-root`, default
../shared/data, skipped when absent) and, with `--faker N`, N sentences from
guardrails.pii_synth (needs `faker`). A gold span is found when detections of its type cover
it with character IoU >= `iou` (0.5; presidio-research's SpanEvaluator uses IoU too), span
ends stripped of spaces and punctuation first; a detection is a false positive when it
matches no gold span of its type that way. Only the guard's entity types are scored; gold
types it does not detect (ADDRESS, ORGANIZATION ...) count neither way. `structured` is
every type but PERSON. `scaling()` compares the guard's cost on adversarial 32 KB inputs
(digits and dashes, "+" runs, repeated "a@a.a") with its cost on 32 KB of prose.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

STRIP = " \t\n.,;:!?'\"()[]{}"


def _norm(text: str, s: int, e: int) -> tuple[int, int]:
    while s < e and text[s] in STRIP:
        s += 1
    while e > s and text[e - 1] in STRIP:
        e -= 1
    return s, e


def _merge_adjacent(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Same-type spans with only white space between them are one entity ("{{first_name}}
    {{last_name}}"), as presidio-research's token (IO) labels make them."""
    out: list[list[int]] = []
    for s, e in sorted(spans):
        if out and not text[out[-1][1]:s].strip():
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def _iou(span: tuple[int, int], others: list[tuple[int, int]]) -> float:
    """IoU of `span` with the union of the `others` that overlap it."""
    s, e = span
    hit = [(a, b) for a, b in others if a < e and s < b]
    if not hit:
        return 0.0
    covered = set()
    for a, b in hit:
        covered.update(range(a, b))
    inter = sum(1 for i in range(s, e) if i in covered)
    union = len(covered | set(range(s, e)))
    return inter / union if union else 0.0


def score(rows: list[dict], predict, entities, iou: float = 0.5, errors: list | None = None) -> dict:
    """Per-entity tp/fp/fn, precision, recall for `predict(text) -> [(entity, start, end)]`.
    `errors`, when given, collects (kind, entity, value, text) for inspection of a dev set."""
    entities = set(entities)
    per = {e: {"tp": 0, "fp": 0, "fn": 0} for e in sorted(entities)}
    for row in rows:
        text = row["full_text"]
        gold: dict[str, list] = {}
        for sp in row["spans"]:
            if sp["entity_type"] in entities:
                gold.setdefault(sp["entity_type"], []).append(
                    _norm(text, sp["start_position"], sp["end_position"]))
        pred: dict[str, list] = {}
        for ent, s, e in predict(text):
            if ent in entities:
                pred.setdefault(ent, []).append(_norm(text, s, e))
        for ent in entities:
            g, p = _merge_adjacent(text, gold.get(ent, [])), pred.get(ent, [])
            for span in g:
                ok = _iou(span, p) >= iou
                per[ent]["tp" if ok else "fn"] += 1
                if not ok and errors is not None:
                    errors.append(("miss", ent, text[span[0]:span[1]], text))
            for span in p:
                if _iou(span, g) < iou:
                    per[ent]["fp"] += 1
                    if errors is not None:
                        errors.append(("false", ent, text[span[0]:span[1]], text))
    return summarise(per)


def _pr(c: dict) -> dict:
    tp, fp, fn = c["tp"], c["fp"], c["fn"]
    return {**c, "precision": round(tp / (tp + fp), 4) if tp + fp else None,
            "recall": round(tp / (tp + fn), 4) if tp + fn else None}


def summarise(per: dict) -> dict:
    def total(names):
        return {k: sum(per[n][k] for n in names) for k in ("tp", "fp", "fn")}

    structured = [e for e in per if e != "PERSON"]
    return {"by_entity": {e: _pr(c) for e, c in per.items() if c["tp"] + c["fp"] + c["fn"]},
            "structured": _pr(total(structured)), "names": _pr(total([e for e in per if e == "PERSON"])),
            "overall": _pr(total(list(per)))}


def guard_predict(cfg=None):
    """predict(text) through the PII guard's own analysis (threshold, PERSON checks)."""
    from guardrails.pii import PiiConfig, analyze

    cfg = cfg or PiiConfig()

    def predict(text):
        return [(r.entity_type, r.start, r.end) for r in analyze(text, cfg)]

    return predict, cfg


def load_small(data_root: str | Path | None = None) -> list[dict] | None:
    root = Path(data_root) if data_root else Path(__file__).resolve().parents[2] / "shared" / "data"
    path = root / "pii" / "presidio_generated_small.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def evaluate(faker_n: int = 1500, seed: int = 2, templates: str = "heldout",
             data_root: str | Path | None = None, iou: float = 0.5, cfg=None) -> dict:
    """Figures on presidio_generated_small (when present) and on `faker_n` Faker sentences
    (0: none). seed 2 / `heldout` templates were never looked at while tuning."""
    predict, cfg = guard_predict(cfg)
    out: dict = {"iou": iou, "entities": list(cfg.entities)}
    small = load_small(data_root)
    if small is not None:
        out["presidio_generated_small"] = {"n": len(small), **score(small, predict, cfg.entities, iou)}
    else:
        out["skipped"] = ["presidio_generated_small.json"]
    if faker_n:
        from guardrails.pii_synth import generate

        rows = generate(faker_n, seed, templates)
        out[f"faker_{templates}_seed{seed}"] = {"n": len(rows), **score(rows, predict, cfg.entities, iou)}
    return out


def format_table(result: dict) -> str:
    lines = []
    for name, m in result.items():
        if not isinstance(m, dict) or "by_entity" not in m:
            continue
        lines.append(f"{name} (n={m['n']}, IoU >= {result['iou']})")
        lines.append(f"  {'entity':<14}{'gold':>6}{'tp':>6}{'fp':>6}{'precision':>11}{'recall':>9}")
        rows = list(m["by_entity"].items()) + [("structured", m["structured"]), ("names", m["names"]),
                                               ("overall", m["overall"])]
        for ent, c in rows:
            cells = [c["tp"] + c["fn"], c["tp"], c["fp"], c["precision"], c["recall"]]
            lines.append(f"  {ent:<14}" + "".join(f"{'-' if v is None else v:>{w}}"
                                                    for v, w in zip(cells, (6, 6, 6, 11, 9), strict=True)))
    return "\n".join(lines)


def adversarial_inputs(size: int = 32 * 1024) -> dict[str, str]:
    """Inputs that make backtracking regexes blow up, and prose of the same length."""
    prose = ("On Tuesday Anna Berg met the committee in Leeds to discuss the budget for 2027, and "
             "after a long debate with Tom Okafor the members agreed to wait until spring. ")

    def rep(s):
        return (s * (size // len(s) + 1))[:size]

    return {"prose": rep(prose), "digits": rep("1234567890"), "digits_dashes": rep("12-34 5-"),
            "plus": rep("+"), "plus_digits": rep("+1 "), "emails": rep("a@a.a"), "dots": rep("1."),
            "capitals": rep("Ab "), "iban_like": rep("DE89 "), "at_dots": rep("a.a@")}


def scaling(size: int = 32 * 1024, repeats: int = 3, cfg=None) -> dict:
    """Guard cost on each adversarial input relative to prose of the same length (best of
    `repeats`); linear-time recognisers keep every ratio within a few times 1."""
    from guardrails.pii import PiiConfig, analyze

    cfg = cfg or PiiConfig()
    analyze("warm up Anna Berg 4111 1111 1111 1111", cfg)
    cost = {}
    for name, text in adversarial_inputs(size).items():
        best = float("inf")
        for _ in range(repeats):
            t0 = time.perf_counter()
            analyze(text, cfg)
            best = min(best, time.perf_counter() - t0)
        cost[name] = best
    return {"size": size, "seconds": {k: round(v, 4) for k, v in cost.items()},
            "ratio_to_prose": {k: round(v / cost["prose"], 2) for k, v in cost.items()}}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--faker", type=int, default=0, help="Faker sentences to generate (0: none)")
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--templates", default="heldout")
    p.add_argument("--data-root")
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--scaling", action="store_true", help="also time adversarial 32 KB inputs")
    p.add_argument("--errors", action="store_true",
                   help="print misses and false detections of the Faker set (synthetic values only)")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    result = evaluate(a.faker, a.seed, a.templates, a.data_root, a.iou)
    if a.scaling:
        result["scaling"] = scaling()
    print(json.dumps(result, indent=1) if a.json else format_table(result))
    if a.scaling and not a.json:
        print("scaling, cost relative to 32 KB prose:", result["scaling"]["ratio_to_prose"])
    if a.errors and a.faker:
        from guardrails.pii_synth import generate

        predict, cfg = guard_predict()
        errs: list = []
        score(generate(a.faker, a.seed, a.templates), predict, cfg.entities, a.iou, errs)
        for kind, ent, val, text in errs:
            print(f"{kind:<6}{ent:<14}{val!r:<36}{text}")


if __name__ == "__main__":
    main()
