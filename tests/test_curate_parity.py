"""Our Gopher/C4/FineWeb filters decide as datatrove 0.10.1's classes do, on real documents.

The documents: the project's extractor over every WARC and JSONL record under ../shared/data/web
(Common Crawl, dolma, warcio, whirlwind samples) and over every 8th page of extraction_dev
(`python -m pipeline.curate.parity ../shared/data/web` runs all 764; docs/stages/curate-filters.md
gives the figures). Required: the same keep/drop decision and reason (and, for C4, the same cleaned
text) on >= 99% of them; every difference must be listed in EXPLAINED with its cause.
"""

from __future__ import annotations

import pytest
from conftest import shared

pytest.importorskip("datatrove")

from pipeline.curate import textsplit  # noqa: E402
from pipeline.curate.parity import filter_parity, parity_corpus  # noqa: E402

#: (filter, doc id) -> why the verdicts differ. Empty: no document differs today.
EXPLAINED: dict[tuple[str, str], str] = {}


def test_character_sets_and_splitting_are_datatroves():
    from datatrove.utils.text import (
        PUNCTUATION,
        TERMINAL_PUNCTUATION,
        split_into_sentences,
        split_into_words,
    )

    assert textsplit.PUNCTUATION == PUNCTUATION and textsplit.TERMINAL_PUNCTUATION == TERMINAL_PUNCTUATION
    for text in ["Hello, world... It is 3.5 km (U.S.). Yes!", "", "a\n\nb - c", "e-mail: x@y.org #tag"]:
        assert list(textsplit.words(text)) == split_into_words(text)
        assert textsplit.sentence_count(text) == len(split_into_sentences(text))


def test_filters_agree_with_datatrove_on_real_documents():
    docs = parity_corpus(str(shared("web")), dev_every=8)
    assert len(docs) > 180
    report = filter_parity(docs)
    assert set(report) == {"gopher_repetition", "gopher_quality", "c4_quality", "fineweb_quality"}
    for name, r in report.items():
        assert r["n"] == len(docs)
        assert r["rate"] >= 0.99, (name, r["differences"][:5])
        unexplained = [d for d in r["differences"] if (name, d["id"]) not in EXPLAINED]
        assert not unexplained, (name, unexplained[:5])
        # The corpus exercises both sides of every filter, so agreement is not "everyone keeps".
        assert 0 < r["kept"] < r["n"], name
