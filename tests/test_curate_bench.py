"""`d2d bench curate` quality figures: the span metric, the snippet metric on real dev pages, the extraction table."""

from __future__ import annotations

from conftest import shared

from cluster.benchmarks.curate import _overlap_prf
from pipeline.curate.extract_eval import evaluate, load_pages, prf, snippet_counts, split_of, table


def test_span_metric_counts_overlaps_by_type():
    golds = [[(0, 10, "PERSON"), (20, 25, "LOCATION")], [(5, 9, "PERSON")]]
    preds = [[(2, 8, "PERSON"), (20, 25, "PERSON")], []]
    person = _overlap_prf(golds, preds, "PERSON")
    assert person == {"precision": 0.5, "recall": 0.5, "predicted": 2, "gold": 2}
    assert _overlap_prf(golds, preds, "LOCATION")["recall"] == 0.0


def test_snippet_metric_counts_kept_missed_and_leaked_strings():
    text = "Main story here.\nIt goes   on\nacross lines.\nSubscribe now"
    # "goes on across" spans a line break and a double space: whitespace runs compare as one space
    assert snippet_counts(text, ["Main story", "goes on across", "not there"], ["Subscribe now", "Cookies"]) == (2, 1, 1, 1)
    assert prf([(2, 1, 1, 1)]) == {"precision": 0.667, "recall": 0.667, "f1": 0.667}
    assert prf([(0, 3, 0, 2)])["f1"] == 0.0


def test_domain_split_keeps_a_site_in_one_part():
    urls = ["https://www.example.co.uk/a", "http://news.example.co.uk/b/c", "https://example.co.uk/"]
    assert len({split_of(u) for u in urls}) == 1
    parts = {split_of(f"https://site{i}.org/x") for i in range(20)}
    assert parts == {"tune", "heldout"}


def test_extraction_metric_on_dev_pages():
    dev = shared("web/extraction_dev")
    pages = load_pages(dev)[::60]  # 13 pages spread over the set, both splits
    assert {p["split"] for p in pages} == {"tune", "heldout"}
    res = evaluate(pages)
    assert set(res) == {"trafilatura", "resiliparse_plain", "resiliparse"}
    for r in res.values():
        for part in ("tune", "heldout"):
            assert r[part]["pages"] > 0 and 0.5 < r[part]["recall"] <= 1.0 and 0.5 < r[part]["precision"] <= 1.0
        assert r["pages_per_cpu_s"] > 0
    assert res["trafilatura"]["speed_vs_trafilatura"] == 1.0
    assert "| resiliparse |" in table(res)
    # an empty output keeps nothing and leaks nothing
    p = pages[0]
    assert snippet_counts("", p["with"], p["without"]) == (0, len(p["with"]), 0, len(p["without"]))


def test_side_by_side_input_and_per_step_cpu_seconds(tmp_path):
    shared("web/extraction_dev")
    from cluster.benchmarks.curate_datatrove import build_warcs
    from pipeline.curate.config import CurateConfig
    from pipeline.curate.readers import read_file
    from pipeline.curate.run import filter_files

    files = build_warcs(str(tmp_path), limit=6)
    assert [f.rsplit("/", 1)[-1] for f in files] == ["dev-00.warc.gz", "dev-01.warc.gz", "warcfile.warc.gz"]
    docs = [d for f in files[:2] for d, _ in read_file(f, 2_000_000) if d]
    assert len(docs) == 6 and all(d["url"].startswith("http") and d["kind"] == "html" for d in docs)
    _kept, stats = filter_files(files[:2], CurateConfig())
    assert stats["read"]["docs_out"] == 6 and stats["extract"]["docs_in"] <= 6
    assert stats["read"]["cpu_s"] > 0 and stats["extract"]["cpu_s"] > 0
