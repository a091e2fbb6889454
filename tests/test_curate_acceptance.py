"""Issue 3's acceptance commands on the shared real WARCs, through the `d2d` CLI on the shared local Ray,
with the default configuration (Presidio PII in a Ray actor pool). The real WARCs carry little PII, so a
small demo crawl with planted names, emails, phone numbers and card numbers goes in beside them; every
planted value must be gone from the output."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
from conftest import shared

from pipeline.acquire.democrawl import write_demo_crawl

EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
PHONE = re.compile(r"\(?\b\d{3}\)?[-. ]\d{3}[-. ]\d{4}\b")
CARD = re.compile(r"\b(?:\d[ -]?){13,19}\b")


def _luhn(digits: str) -> bool:
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = int(c) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def test_real_warcs_with_presidio(ray_local, tmp_path, capsys):
    from cluster.cli import main

    web = shared("web")
    demo = tmp_path / "demo"
    write_demo_crawl(demo, n_pages=40, seed=11, pages_per_file=40)
    planted = [json.loads(x)["pii"] for x in (demo / "manifest.jsonl").read_text().splitlines()]
    planted = [p for p in planted if p]
    assert planted
    run = tmp_path / "run"
    inputs = f"{web}/*.warc.gz,{demo}/*.warc.gz"
    assert main(["curate", "--input", inputs, "--run-dir", str(run)]) == 0, capsys.readouterr().err
    rows = pq.read_table(sorted((run / "curated").glob("part-*.parquet"))).to_pylist()
    assert rows and all(r["lang"] == "en" for r in rows)
    stages = json.loads((run / "curated" / ".stats.json").read_text())["stages"]
    lang = stages["language"]["dropped"]
    assert lang.get("lang_zh", 0) > 0 and sum(v for k, v in lang.items() if k.startswith("lang_")) > 0
    assert stages["pii"]["mode"] == "presidio"
    removed = stages["pii"]["entities_removed"]
    assert all(removed.get(k, 0) > 0 for k in ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD")), removed
    everything = "\n".join(r["text"] for r in rows)
    for p in planted:
        for kind in ("email", "phone", "card"):
            assert p[kind] not in everything, kind
    for r in rows:
        text = r["text"]
        assert not EMAIL.search(text), EMAIL.search(text).group()
        assert not PHONE.search(text), PHONE.search(text).group()
        cards = [m for m in CARD.findall(text) if _luhn(re.sub(r"\D", "", m))]
        assert not cards, cards


def test_broken_warcs_exit_zero_and_report_reasons(ray_local, tmp_path, capsys):
    from cluster.cli import main

    run = tmp_path / "bad"
    assert main(["curate", "--input", str(shared("web/warcio")), "--run-dir", str(run), "--pii-mode", "regex"]) == 0
    summary = json.loads((run / "curated" / ".stats.json").read_text())["summary"]
    assert summary["bad_records"] and all(isinstance(v, int) and v > 0 for v in summary["bad_records"].values())
