"""Curation extraction (pipeline/curate/extract.py) scored against known main content (cluster/benchmarks/curate.py)."""

from __future__ import annotations

import random

import pytest

from cluster.benchmarks.curate import div_soup_page, word_prf
from pipeline.acquire.democrawl import render_page
from pipeline.acquire.demotext import english_article
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


ARTICLE = ["The harbour was rebuilt twice in the last century, each time further from the old town walls.",
           "Fishermen still land their catch at dawn, when the market opens and prices are set by auction.",
           "Visitors who arrive by ferry see the lighthouse first, then the long row of painted warehouses.",
           "The shipping office keeps its records at the same street number it has used since the war."]


def pruning_page() -> str:
    """A div-only page: the article, around it a sidebar, related posts, share bar, newsletter, cookie notice,
    and one article paragraph in a block whose class merely contains boilerplate letters ("ad", "nav")."""
    p = [f"<p>{s}</p>" for s in ARTICLE]
    return f"""<html><body>
<div class="top-navigation"><a href="/">Home</a> <a href="/news">News</a> <a href="/about">About us</a></div>
<div id="page"><div class="has-sidebar layout">
<div class="sidebar-left"><h4>Trending stories</h4><p>Our editors picked five long reads about coastal towns for your weekend.</p></div>
<div class="content"><h1>Life in the harbour town</h1>{p[0]}{p[1]}
<div class="postal-address navigator-note">{p[3]}</div>{p[2]}
<div class="shareButtons">Share on Facebook, Twitter and email to your friends today</div>
<div class="related-posts"><h3>You may also like</h3><p>A quieter weekend on the northern islands, told by a local guide.</p></div>
</div>
<div id="newsletter_box">Sign up for our weekly newsletter and never miss a story from the coast.</div>
</div></div>
<div role="contentinfo">Contact the editorial team about corrections to this article.</div>
<div class="cookie-consent">This website stores cookies on your computer to improve your experience.</div>
</body></html>"""


def test_boilerplate_blocks_pruned_article_kept():
    from pipeline.curate.extract import boilerplate_word, prune_boilerplate

    text = extract_html(pruning_page(), "resiliparse")
    assert all(s in text for s in ARTICLE), text  # the "postal-address" paragraph too: "ad" is not a token of it
    assert "Life in the harbour town" in text
    for boiler in ("Trending stories", "five long reads", "Share on Facebook", "You may also like", "northern islands",
                   "weekly newsletter", "editorial team", "stores cookies", "About us"):
        assert boiler not in text, boiler
    assert [boilerplate_word(w) for w in ("address", "header", "loader", "has-sidebar", "tag-social-media")] == [False] * 5
    assert [boilerplate_word(w) for w in ("related-posts", "shareButtons", "ad-slot", "topAd", "widget_text")] == [True] * 5
    from resiliparse.parse.html import HTMLTree

    # Exactly the boilerplate blocks go, the outermost of each nest once.
    assert prune_boilerplate(HTMLTree.parse(pruning_page())) == 7


def test_orphan_headings_dropped_section_headings_kept():
    from pipeline.curate.extract import drop_orphan_headings

    ranks = {"Popular this week": 4, "Title": 1, "Subtitle": 1, "Part one": 2, "Share this": 3,
             "Over 250 billion pages crawled.": 3}
    text = "Popular this week\nTitle\nSubtitle\nPart one\nbody text\nOver 250 billion pages crawled.\nShare this"
    assert drop_orphan_headings(text, ranks).split("\n") == ["Title", "Subtitle", "Part one", "body text",
                                                              "Over 250 billion pages crawled."]


def test_link_dense_blocks_pruned_linked_prose_kept():
    from resiliparse.parse.html import HTMLTree

    from pipeline.curate.extract import prune_link_blocks

    prose = (f"<p>{ARTICLE[0]} The <a href='/h'>harbour master</a> keeps the tide tables. {ARTICLE[1]}</p>"
             f"<p>{ARTICLE[2]}</p><p>{ARTICLE[3]}</p>")
    page = (f"<html><body><div class='story'><h1>Harbour</h1>{prose}"
            "<p>Read also: <a href='/x'>Ferry timetable changes for the winter season announced today</a></p>"
            "<ul><li><a href='/a'>Lighthouse tours</a></li><li><a href='/b'>Fish market prices</a></li></ul>"
            "</div></body></html>")
    assert prune_link_blocks(HTMLTree.parse(page)) == 3  # the "Read also" line and both list items
    text = extract_html(page, "resiliparse")
    assert all(s in text for s in ARTICLE) and "harbour master" in text
    for boiler in ("Ferry timetable", "Lighthouse tours", "Fish market"):
        assert boiler not in text, boiler
