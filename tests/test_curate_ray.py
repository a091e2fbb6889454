"""Curation end to end on the shared local Ray: the demo crawl through every stage."""

from __future__ import annotations

import json
import os

import pyarrow.parquet as pq
import pytest

from cluster.config import build_config
from pipeline.curate.config import CurateConfig
from pipeline.curate.readers import expand_inputs
from pipeline.errors import StageError

DEMO = "demo://?pages=60&seed=3&per_file=20"


def test_demo_input_written_once_and_reused(run_dir):
    files = expand_inputs([DEMO], run_dir=str(run_dir))
    assert len(files) == 3 and all(f.endswith(".warc.gz") for f in files)
    stamp = [os.stat(f).st_mtime_ns for f in files]
    assert expand_inputs([DEMO], run_dir=str(run_dir)) == files
    assert [os.stat(f).st_mtime_ns for f in files] == stamp
    assert len(expand_inputs(["demo://?pages=30&seed=3&per_file=20"], run_dir=str(run_dir))) == 2
    with pytest.raises(StageError, match="unknown parameters"):
        expand_inputs(["demo://?pages=30&colour=red"], run_dir=str(run_dir))
    with pytest.raises(StageError, match="seeds file"):
        expand_inputs([str(run_dir / "no-such-seeds.txt")], run_dir=str(run_dir))


def test_curate_demo_crawl(ray_local, run_dir):
    from pipeline.curate.run import run

    cfg = build_config(CurateConfig, "tiny", {"input": DEMO, "run_dir": str(run_dir), "pii_mode": "regex",
                                              "shuffle_partitions": 2})
    out = run(cfg)
    cur = run_dir / "curated"
    rows = pq.read_table(sorted(cur.glob("part-*.parquet"))).to_pylist()
    assert rows and out["docs_out"] == len(rows)
    for col in ("id", "url", "text", "lang", "lang_score", "n_words", "dup_cluster_size", "pii_counts"):
        assert col in rows[0], col
    assert all(r["lang"] == "en" and r["lang_score"] >= cfg.lang_threshold for r in rows)

    stats = json.loads((cur / ".stats.json").read_text())["stages"]
    for name in ("read", "language", "exact_dedup", "near_dedup", "pii"):
        s = next(v for k, v in stats.items() if k.startswith(name))
        assert s["docs_in"] >= s["docs_out"] and isinstance(s["dropped"], dict), name
    lang = next(v for k, v in stats.items() if k.startswith("lang"))
    assert any("lang" in r for r in lang["dropped"]) and sum(lang["dropped"].values()) > 0

    manifest = [json.loads(x) for x in (run_dir / "demo_crawl" / "manifest.jsonl").read_text().splitlines()]
    kept = {r["url"] for r in rows}
    foreign = [m["url"] for m in manifest if m["category"] == "foreign"]
    assert foreign and not kept & set(foreign)
    # Each planted duplicate group (original + copies) keeps at most one page.
    groups: dict[str, set] = {}
    for m in manifest:
        if m["duplicate_of"]:
            groups.setdefault(m["duplicate_of"], {m["duplicate_of"]}).add(m["url"])
    assert groups and all(len(g & kept) <= 1 for g in groups.values())
    assert stats["exact_dedup"]["dropped"].get("exact_duplicate", 0) >= 1
    assert stats["near_dedup"]["dropped"].get("near_duplicate", 0) >= 1

    planted = [m["pii"] for m in manifest if m["pii"]]
    assert planted
    text = "\n".join(r["text"] for r in rows)
    for p in planted:
        assert p["email"] not in text and p["card"] not in text and p["card"].replace(" ", "") not in text
    assert sum(json.loads(r["pii_counts"]).get("EMAIL_ADDRESS", 0) for r in rows) >= 1
