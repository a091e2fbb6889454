"""The quality step: a fastText classifier trained in the test by `d2d curate-quality-train`, scored by fasttext-predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.curate.config import CurateConfig
from pipeline.curate.quality import (
    EOS,
    QualityScorer,
    normalise,
    read_labels,
    train,
    write_fasttext_bin,
)
from pipeline.curate.steps import run_steps
from pipeline.errors import StageError


def _texts():
    """Article paragraphs (good) vs SEO-spam pages (crawl junk) of the project's generated crawl."""
    from pipeline.acquire.democrawl import generate_pages

    pages = generate_pages(400, seed=5)
    good = ["\n".join(p["paragraphs"]) for p in pages if p["category"] == "english"]
    bad = ["\n".join(p["paragraphs"]) for p in pages if p["category"] == "spam"]
    return good, bad


def test_trained_classifier_loads_in_fasttext_and_matches_its_maths(tmp_path):
    good, bad = _texts()
    vocab, counts, emb, out, labels = train(good[:20], bad[:8], dim=8, epochs=3)
    path = str(tmp_path / "q.bin")
    write_fasttext_bin(path, vocab, counts, emb, out, labels, [20, 8])
    assert read_labels(path) == ["__label__hq", "__label__cc"]
    scorer = QualityScorer(path)
    index = {w: i for i, w in enumerate(vocab)}
    for text in good[20:23] + bad[8:10] + ["words never seen zzzq"]:
        ids = [index[w] for w in normalise(text).split() + [EOS] if w in index]
        z = out @ emb[ids].mean(axis=0)
        p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
        assert scorer.score(text) == pytest.approx(float(p[0]), abs=1e-4)


def test_quality_train_cli_and_step(tmp_path, capsys):
    from cluster.cli import main

    good, bad = _texts()
    pos, neg = tmp_path / "sft.jsonl", tmp_path / "crawl.jsonl"
    # SFT-style rows (assistant turns are the text) against plain crawl rows.
    pos.write_text("".join(json.dumps({"messages": [{"role": "user", "content": "Tell me."},
                                                   {"role": "assistant", "content": t}]}) + "\n" for t in good[:60]))
    neg.write_text("".join(json.dumps({"messages": [{"role": "assistant", "content": t}]}) + "\n" for t in bad[:8]))
    model = tmp_path / "quality.bin"
    assert main(["curate-quality-train", "--positive", str(pos), "--negative", str(neg), "--field", "messages",
                 "--output", str(model), "--epochs", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["positive"] == 60 and report["negative"] == 8 and report["train_accuracy"] >= 0.9

    cfg = CurateConfig(quality_model=str(model), quality_threshold=0.5)
    step = QualityScorer.from_config(cfg)
    held_out = [{"id": f"g{i}", "text": t} for i, t in enumerate(good[60:80])] + [
        {"id": f"b{i}", "text": t} for i, t in enumerate(bad[8:14])]
    stats = {}
    kept = run_steps([dict(d) for d in held_out], [step], stats)
    kept_ids = {d["id"] for d in kept}
    assert all(0.0 <= d["quality_score"] <= 1.0 for d in kept)
    good_kept = sum(i.startswith("g") for i in kept_ids) / 20
    bad_kept = sum(i.startswith("b") for i in kept_ids) / 6
    assert good_kept >= 0.9 and bad_kept <= 0.2, (good_kept, bad_kept)
    assert stats["quality"]["dropped"]["quality_below_threshold"] == len(held_out) - len(kept)

    # Top fraction instead of a threshold: the best quarter by score, whatever their absolute value.
    top = QualityScorer(str(model), top_fraction=0.25)
    scored = [dict(d) for d in held_out]
    assert all(top(d) == (True, "") for d in scored)
    best, rest = top.filter_batch(scored)
    assert len(best) == 7 and min(d["quality_score"] for d in best) >= max(d["quality_score"] for d in rest)

    # Inside curation's phase 1: the step runs last, its score is a column, drops are counted.
    from pipeline.curate.run import filter_files, shard_schema

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in held_out))
    for fields, reason in (({"quality_threshold": 0.5}, "quality_below_threshold"),
                           ({"quality_top_fraction": 0.5}, "quality_below_top_fraction")):
        cfg = CurateConfig(quality_model=str(model), **fields)
        kept, stats = filter_files([str(docs)], cfg)
        q = stats["quality"]
        assert q["docs_in"] > 0 and q["docs_out"] == len(kept) and q["dropped"][reason] == q["docs_in"] - len(kept)
        assert all(0.0 <= d["quality_score"] <= 1.0 for d in kept) and "quality_score" in shard_schema(cfg).names
    assert "quality_score" not in shard_schema(CurateConfig()).names


def test_quality_step_is_off_by_default_and_bad_models_fail_naming_the_field(tmp_path):
    assert QualityScorer.from_config(CurateConfig()) is None
    with pytest.raises(StageError, match="quality_model"):
        QualityScorer(str(tmp_path / "missing.bin"))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(StageError, match="quality_model"):
        QualityScorer(str(junk))
    vocab, counts, emb, out, labels = train(["a good text"], ["a bad text"], dim=4, epochs=1)
    write_fasttext_bin(str(tmp_path / "q.bin"), vocab, counts, emb, out, labels, [1, 1])
    with pytest.raises(StageError, match="quality_label"):
        QualityScorer(str(tmp_path / "q.bin"), label="__label__other")
