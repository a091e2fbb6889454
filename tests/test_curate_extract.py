"""Curation extraction (pipeline/curate/extract.py) scored against known main content (pipeline/curate/bench.py)."""

from __future__ import annotations

import random

import pytest

from pipeline.acquire.democrawl import render_page
from pipeline.acquire.demotext import english_article
from pipeline.curate.bench import div_soup_page, word_prf
from pipeline.curate.extract import extract_html


def test_word_prf_counts_boilerplate_and_misses():
    gold = "one two three four"
    assert word_prf([(gold, gold)]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    s = word_prf([("one two three four five six seven eight", gold)])
    assert s["precision"] == 0.5 and s["recall"] == 1.0
    s = word_prf([("one two", gold), ("", "x y")])
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(2 / 6, abs=1e-4)


@pytest.mark.parametrize("extractor", ["resiliparse", "trafilatura"])
def test_extractors_keep_article_drop_comments_and_byline(extractor):
    rng = random.Random(3)
    title, paragraphs, _ = english_article(rng)
    for page in (div_soup_page(title, paragraphs, rng), render_page(title, paragraphs, "example.org", rng=rng)):
        text = extract_html(page, extractor)
        assert all(p in text for p in paragraphs)
        for boiler in ("reader0", "by admin on", "We use cookies", "All rights reserved", "Posted "):
            assert boiler not in text, boiler
