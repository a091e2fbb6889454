"""`d2d bench curate` quality figures: the span metric and the extraction-quality table."""

from __future__ import annotations

from pipeline.curate.bench import _overlap_prf, extraction_quality


def test_span_metric_counts_overlaps_by_type():
    golds = [[(0, 10, "PERSON"), (20, 25, "LOCATION")], [(5, 9, "PERSON")]]
    preds = [[(2, 8, "PERSON"), (20, 25, "PERSON")], []]
    person = _overlap_prf(golds, preds, "PERSON")
    assert person == {"precision": 0.5, "recall": 0.5, "predicted": 2, "gold": 2}
    assert _overlap_prf(golds, preds, "LOCATION")["recall"] == 0.0


def test_extraction_quality_scores_both_extractors():
    q = extraction_quality(quick=True)["extraction_quality"]
    real = q.pop("real_pages", None)
    assert set(q) == {"demo_layout", "div_layout"}
    if real is not None:  # ../shared/data present: agreement between the extractors on real pages
        assert real["english_pages_both_nonempty"] > 0
        assert 0 < real["resiliparse_words_in_trafilatura"] <= 1 and 0 < real["trafilatura_words_in_resiliparse"] <= 1
    for figures in q.values():
        assert figures["pages"] > 10
        for ex in ("resiliparse", "trafilatura"):
            assert 0.9 <= figures[ex]["recall"] <= 1.0 and 0.9 <= figures[ex]["precision"] <= 1.0
            assert figures[ex]["docs_per_cpu_s"] > 0
