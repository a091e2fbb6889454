"""Our Gopher, C4 and FineWeb filters against datatrove's own classes, document by document.

    .venv/bin/python -m pipeline.curate.parity ../shared/data/web

`filter_parity(docs)` runs each of our filters and datatrove 0.10.1's class of the
same name, with the same thresholds, on the same text, and reports per filter: n,
agree (same keep/drop and the same reason), rate, and every difference with both
verdicts. For C4, which rewrites the text, a kept document must also come out with
the same text. datatrove is imported only here (the `bench` extra); the runtime
filters do not depend on it. `parity_corpus(web_dir)` gives the texts the test and
`d2d bench curate` use: the project's extractor over every WARC/WET record and JSONL
document under the shared web folder and over the 764 pages of `extraction_dev/`.
"""

from __future__ import annotations

import glob
import gzip
import os
import sys

#: Our reason = prefix + datatrove's reason (Gopher quality's already carry "gopher_").
_PREFIX = {"gopher_repetition": "gopher_", "gopher_quality": "", "c4_quality": "c4_", "fineweb_quality": "fineweb_"}


def _pairs(cfg) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from datatrove.pipeline.filters import (
        C4QualityFilter as DtC4,
    )
    from datatrove.pipeline.filters import (
        FineWebQualityFilter as DtFineWeb,
    )
    from datatrove.pipeline.filters import (
        GopherQualityFilter as DtGopherQ,
    )
    from datatrove.pipeline.filters import (
        GopherRepetitionFilter as DtGopherR,
    )

    from pipeline.curate.filters import (
        C4QualityFilter,
        FineWebQualityFilter,
        GopherQualityFilter,
        GopherRepetitionFilter,
    )

    top = tuple((int(k), float(v)) for k, v in cfg.gopher_top_ngram_fracs.items())
    dup = tuple((int(k), float(v)) for k, v in cfg.gopher_dup_ngram_fracs.items())
    return {
        "gopher_repetition": (
            GopherRepetitionFilter(cfg.gopher_dup_line_frac, cfg.gopher_dup_para_frac, cfg.gopher_dup_line_char_frac,
                                   cfg.gopher_dup_para_char_frac, cfg.gopher_top_ngram_fracs, cfg.gopher_dup_ngram_fracs),
            DtGopherR(cfg.gopher_dup_line_frac, cfg.gopher_dup_para_frac, cfg.gopher_dup_line_char_frac,
                      cfg.gopher_dup_para_char_frac, top_n_grams=top, dup_n_grams=dup)),
        "gopher_quality": (
            GopherQualityFilter(cfg.gopher_min_words, cfg.gopher_max_words, cfg.gopher_min_avg_word_length,
                                cfg.gopher_max_avg_word_length, cfg.gopher_max_symbol_word_ratio,
                                cfg.gopher_max_bullet_lines_ratio, cfg.gopher_max_ellipsis_lines_ratio,
                                cfg.gopher_max_non_alpha_words_ratio, cfg.gopher_min_stop_words),
            DtGopherQ(cfg.gopher_min_words, cfg.gopher_max_words, cfg.gopher_min_avg_word_length,
                      cfg.gopher_max_avg_word_length, cfg.gopher_max_symbol_word_ratio,
                      cfg.gopher_max_bullet_lines_ratio, cfg.gopher_max_ellipsis_lines_ratio,
                      cfg.gopher_max_non_alpha_words_ratio, cfg.gopher_min_stop_words)),
        "c4_quality": (
            C4QualityFilter(cfg.c4_min_words_per_line, cfg.c4_max_word_length, cfg.c4_min_sentences),
            DtC4(min_num_sentences=cfg.c4_min_sentences, min_words_per_line=cfg.c4_min_words_per_line,
                 max_word_length=cfg.c4_max_word_length)),
        "fineweb_quality": (
            FineWebQualityFilter(cfg.fineweb_line_punct_thr, cfg.fineweb_short_line_thr, cfg.fineweb_short_line_length,
                                 cfg.fineweb_char_dup_ratio, cfg.fineweb_new_line_ratio),
            DtFineWeb(line_punct_thr=cfg.fineweb_line_punct_thr, short_line_thr=cfg.fineweb_short_line_thr,
                      short_line_length=cfg.fineweb_short_line_length,
                      char_duplicates_ratio=cfg.fineweb_char_dup_ratio, new_line_ratio=cfg.fineweb_new_line_ratio)),
    }


def _theirs(dt_filter, doc_id: str, text: str, prefix: str) -> tuple[bool, str, str]:
    from datatrove.data import Document

    d = Document(text=text, id=doc_id)
    try:
        out = dt_filter.filter(d)
    except Exception as e:  # noqa: BLE001 - datatrove divides by zero on some texts; that is a verdict to compare
        return False, f"error:{type(e).__name__}", text
    keep, reason = (out, "") if isinstance(out, bool) else (out[0], out[1] or "")
    if not keep and not reason.startswith(prefix or "gopher_"):
        reason = prefix + reason
    return keep, ("" if keep else reason), d.text


def filter_parity(docs: list[dict], cfg=None) -> dict:
    """Per filter: {"n", "kept" (by ours), "agree", "rate", "differences": [{"id", "ours", "datatrove"}]} over
    `docs` ({"id", "text"}); `cfg` (a CurateConfig, default its defaults) gives both sides their thresholds."""
    from pipeline.curate.config import CurateConfig

    cfg = cfg or CurateConfig()
    out = {}
    for name, (ours, theirs) in _pairs(cfg).items():
        agree, kept, diffs = 0, 0, []
        for doc in docs:
            mine = dict(doc)
            keep, reason = ours(mine)
            kept += keep
            dt_keep, dt_reason, dt_text = _theirs(theirs, doc["id"], doc["text"], _PREFIX[name])
            same = keep == dt_keep and (reason if not keep else "") == dt_reason
            if same and keep and mine["text"] != dt_text:
                same, reason = False, "kept, other text"
            if same:
                agree += 1
            else:
                diffs.append({"id": doc["id"], "ours": reason or "keep", "datatrove": dt_reason or "keep"})
        out[name] = {"n": len(docs), "kept": kept, "agree": agree, "rate": round(agree / max(len(docs), 1), 4),
                     "differences": diffs}
    return out


def parity_corpus(web_dir: str, dev_every: int = 1) -> list[dict]:
    """{"id", "url", "text"} of every document under `web_dir` that the project's extractor gets text from
    (of the extraction_dev pages, every `dev_every`-th in name order)."""
    from pipeline.curate.extract import HtmlExtractor
    from pipeline.curate.readers import KNOWN_EXT, read_file

    ex = HtmlExtractor()
    raw: list[dict] = []
    for path in sorted(glob.glob(os.path.join(web_dir, "**", "*"), recursive=True)):
        if path.endswith(KNOWN_EXT) and "extraction_dev" not in path:
            raw += [d for d, _ in read_file(path, 10_000_000) if d]
    for path in sorted(glob.glob(os.path.join(web_dir, "extraction_dev", "html", "*.html.gz")))[::dev_every]:
        with gzip.open(path) as f:
            raw.append({"id": os.path.basename(path), "url": "", "raw": f.read(), "content_type": "text/html",
                        "status": 200, "kind": "html"})
    docs = []
    for d in raw:
        if ex(d)[0]:
            docs.append({"id": d["id"], "url": d.get("url", ""), "text": d["text"]})
    return docs


if __name__ == "__main__":
    import json

    corpus = parity_corpus(sys.argv[1] if len(sys.argv) > 1 else "../shared/data/web")
    report = filter_parity(corpus)
    print(json.dumps({k: {**v, "differences": v["differences"][:10]} for k, v in report.items()}, indent=1))
