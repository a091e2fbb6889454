"""HTML to text: resiliparse (main content, default: fastest) or trafilatura (precision mode).

    .venv/bin/python -m pipeline.curate.extract ../shared/data/web/warcfile.warc.gz

Decodes with the charset resiliparse detects (EUC-JP, GBK ... included), sets aside
non-HTML, binary, empty and HTTP-error records with their reason, and bounds each
page's extraction time so one pathological page cannot stall a shard. Before resiliparse's
main-content pass, blocks that class/id/role/tag signals mark as boilerplate (sidebar, related,
share, caption, author box, <nav>, role=contentinfo ...) and paragraph-level blocks that are mostly
link text are pruned from the DOM; afterwards headings left with nothing under them are dropped.
A page where that leaves under FALLBACK_MIN_CHARS goes to trafilatura's precision mode instead.
Quality and speed against trafilatura on real pages with gold snippets: `d2d bench curate`
(pipeline/curate/extract_eval.py).
"""

from __future__ import annotations

import functools
import re
import signal
import sys
import threading

from pipeline.curate.steps import Step

TEXTUAL = ("text/html", "application/xhtml", "text/plain", "application/xml", "text/xml", "")


class ExtractTimeout(Exception):
    pass


def _with_timeout(fn, timeout_s: float):
    # SIGALRM only works in the main thread; Ray task and test code run there.
    if timeout_s <= 0 or threading.current_thread() is not threading.main_thread():
        return fn()

    def _raise(*_):
        raise ExtractTimeout()

    old = signal.signal(signal.SIGALRM, _raise)
    signal.setitimer(signal.ITIMER_REAL, timeout_s)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def decode(body: bytes) -> str:
    from resiliparse.parse.encoding import bytes_to_str, detect_encoding

    return bytes_to_str(body, detect_encoding(body))


#: Class/id words that mark boilerplate blocks (the signals trafilatura's and readability's cleaners use).
#: Matched against whole tokens of class/id words split at punctuation and camelCase, so "related-posts"
#: and "shareButtons" match but "address", "header" or "loader" never match "ad".
BOILERPLATE_TOKENS = frozenset(
    "sidebar sidebars widget widgets related popular share sharing sharedaddy social comment comments "
    "footer nav navbar navigation menu breadcrumb breadcrumbs cookie cookies consent gdpr newsletter "
    "subscribe subscription signup ad ads advert adverts advertisement sponsor sponsored promo "
    "pagination pager disqus skyscraper caption credit credits copyright author bio".split())
#: Words that make the boilerplate token after them describe something else: a wrapper's state
#: ("has-sidebar", "no-comments") or a post's taxonomy (WordPress "tag-social-media", "category-ads").
_QUALIFIERS = frozenset("has with no without show hide is tag tags category categories topic".split())
_ROLES = frozenset(("navigation", "complementary", "contentinfo"))
# Class words split at punctuation, and letter-only parts at camelCase ("shareButtons"); parts with digits
# stay whole, so a hashed id like "w-node-18ad" yields no "ad".
_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_CAMEL = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
#: Never pruned by class/id/role: the blocks main content lives in.
_NEVER = frozenset(("article", "main", "body", "html"))
_HEADINGS = "h1,h2,h3,h4,h5,h6"
# Elements whose class/id contains a boilerplate token as a substring (a superset of the token matches): lexbor
# selects them in C, so only these few reach the Python token check.
_CANDIDATES = ",".join(["aside", "nav", "figcaption", "[role]"] + [f'[{a}*="{t}" i]' for t in sorted(BOILERPLATE_TOKENS)
                                                                    for a in ("class", "id")])
#: Longer headings are kept even when orphaned: sidebar and widget titles are short.
ORPHAN_HEADING_MAX_WORDS = 6
#: Below this many characters of resiliparse output a page goes to trafilatura (precision mode) instead.
FALLBACK_MIN_CHARS = 300


def boilerplate_word(word: str) -> bool:
    """Whether one whitespace-separated class/id word ("related-posts", "has-sidebar") names a boilerplate block."""
    toks: list[str] = []
    for part in _SPLIT.split(word):
        toks += _CAMEL.findall(part) if part.isalpha() else [part]
    toks = [t.lower() for t in toks]
    return any(t in BOILERPLATE_TOKENS and (i == 0 or toks[i - 1] not in _QUALIFIERS) for i, t in enumerate(toks))


@functools.lru_cache(maxsize=8192)
def _boilerplate_value(value: str) -> bool:
    return any(boilerplate_word(w) for w in value.split())


def _is_boilerplate(el) -> bool:
    c, i, tag = el.class_name, el.id, el.tag
    if tag in _NEVER:
        return False
    return bool(tag in ("aside", "nav", "figcaption") or (c and _boilerplate_value(c)) or (i and _boilerplate_value(i))
                or (el.getattr("role") or "").lower() in _ROLES)


def _paragraph_chars(el) -> int:
    return sum(len(p.text) for p in el.query_selector_all("p")[:])


def prune_boilerplate(tree) -> int:
    """Remove the blocks that class/id/role/tag signals mark as boilerplate from a resiliparse HTMLTree, in
    place; returns how many were removed. A block holding an <article>/<main> or over half of the page's
    paragraph text is a wrapper whose class misleads ("main-content has-double-sidebar", an "elementor-widget"
    holding the post) and is kept. Paragraph text, not all text: inline scripts and JSON can be most of a
    page's characters and would let such a wrapper fall under any share of it."""
    body = tree.body
    if body is None:
        return 0
    # [:] copies the collection in one call; iterating it re-runs the selector per element (quadratic).
    els = body.query_selector_all(_CANDIDATES)[:]
    total, mains, outer = None, body.query_selector_all("article,main")[:], []
    for el in els:  # document order: an element's descendants follow it
        if (outer and outer[-1].contains(el)) or not _is_boilerplate(el):
            continue
        total = _paragraph_chars(body) if total is None else total
        if (not total or _paragraph_chars(el) <= 0.5 * total) and not any(el.contains(m) for m in mains):
            outer.append(el)
    for el in outer:
        el.decompose()
    return len(outer)


#: Blocks whose text is mostly link text are menus, teaser lists and "Read also: <a>...</a>" lines inside
#: an article; a long block is prose that happens to link a lot and stays.
_LINK_BLOCKS = frozenset("p li h2 h3 h4 h5 h6 dd dt blockquote".split())
LINK_DENSITY_MAX = 0.5
LINK_BLOCK_MAX_CHARS = 400


def prune_link_blocks(tree) -> int:
    """Remove paragraph-level blocks (p, li, h2-h6 ...) up to LINK_BLOCK_MAX_CHARS whose link text is at least
    LINK_DENSITY_MAX of their text; returns how many. One pass over the links, each credited to its
    nearest such block."""
    body = tree.body
    if body is None:
        return 0
    linked: dict = {}
    for a in body.query_selector_all("a")[:]:
        n = len(a.text.strip())
        el = a.parent
        while n and el is not None and el.tag not in _LINK_BLOCKS and el.tag not in _NEVER:
            el = el.parent
        if n and el is not None and el.tag in _LINK_BLOCKS:
            linked[el] = linked.get(el, 0) + n
    gone = 0
    for el, n in linked.items():
        t = len(el.text.strip())
        if t <= LINK_BLOCK_MAX_CHARS and n >= LINK_DENSITY_MAX * t:
            el.decompose()
            gone += 1
    return gone


def drop_orphan_headings(text: str, headings: dict[str, int]) -> str:
    """Drop heading lines (`headings`: text -> rank 1-6) that no other line follows before a heading of higher
    rank or the end, looking past headings of the same or lower rank (a title's subtitle, the next widget
    title): a sidebar's "Popular this week" whose links main-content extraction removed, a "Share this" at
    the end. A heading that introduces a line of text, directly or through its subheadings, stays, and so
    does a long or sentence-like one ("Over 250 billion pages spanning 15 years."), which is content itself."""
    if not headings:
        return text
    lines = text.split("\n")
    rank = [headings.get(" ".join(ln.split())) for ln in lines]
    keep = []
    for i, r in enumerate(rank):
        title_like = len(lines[i].split()) <= ORPHAN_HEADING_MAX_WORDS and not lines[i].rstrip().endswith((".", "!", "?"))
        if r is not None and title_like:
            j = i + 1  # past blank lines and same- or lower-rank headings
            while j < len(lines) and ((rank[j] is None and not lines[j].strip()) or (rank[j] or 0) >= r):
                j += 1
            if j == len(lines) or rank[j] is not None:
                continue
        keep.append(lines[i])
    return "\n".join(keep)


#: A line this long is article prose; TAIL_SENTENCE_MIN_WORDS: a shorter line after the last one stays only
#: if it is a sentence of at least this many words.
PROSE_LINE_MIN_CHARS = 200
TAIL_SENTENCE_MIN_WORDS = 5
_SENTENCE_END = (".", "!", "?", '"', "\u201c", "\u201d", ")")


def drop_trailing_fragments(text: str) -> str:
    """Drop the lines after the last prose line (PROSE_LINE_MIN_CHARS) that are not sentences: what follows
    an article and survives pruning is its furniture ("Back to overview", "Related topics", a date, a photo
    credit, "Contact:"), while an article's own closing lines are sentences. Text without any prose line is
    a list, a table or a forum page, and is returned as it is."""
    lines = text.split("\n")
    last = max((i for i, ln in enumerate(lines) if len(ln) >= PROSE_LINE_MIN_CHARS), default=None)
    if last is None:
        return text
    return "\n".join(lines[:last + 1] + [ln for ln in lines[last + 1:] if ln.rstrip().endswith(_SENTENCE_END)
                                         and len(ln.split()) >= TAIL_SENTENCE_MIN_WORDS])


def extract_html(html: str, extractor: str) -> str:
    if extractor == "trafilatura":
        import trafilatura

        return trafilatura.extract(html, favor_precision=True, include_comments=False) or ""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    tree = HTMLTree.parse(html)
    prune_boilerplate(tree)
    prune_link_blocks(tree)
    headings: dict[str, int] = {}
    for h in tree.body.query_selector_all(_HEADINGS)[:] if tree.body is not None else ():
        t = " ".join(h.text.split())
        headings[t] = min(headings.get(t, 9), int(h.tag[1]))
    # Comment threads and bylines ("by admin on May 3 | 4 comments") are not main content: with
    # them, precision on pages of known content fell below trafilatura's (see `d2d bench curate`).
    text = drop_orphan_headings(extract_plain_text(tree, main_content=True, alt_texts=False, links=False,
                                                   list_bullets=True, comments=False, post_meta=False), headings)
    text = drop_trailing_fragments(text)
    if len(text) < FALLBACK_MIN_CHARS:
        # resiliparse's main-content pass found (almost) nothing: on the dev pages' tune split these are
        # mostly articles it misses, not pages without text. Few pages get here (~4%), so trafilatura's cost
        # is paid only on them.
        import trafilatura

        text = trafilatura.extract(html, favor_precision=True, include_comments=False) or text
    return text


class HtmlExtractor(Step):
    name = "extract"

    def __init__(self, extractor: str = "resiliparse", timeout_s: float = 10.0):
        self.extractor, self.timeout_s = extractor, timeout_s

    @staticmethod
    def page(doc) -> tuple[str | None, str, bool]:
        """(decoded text, "", whether it is HTML to extract) of a record, or (None, reason, False) for one
        set aside: an HTTP error, an empty, non-textual, binary or undecodable body."""
        raw: bytes = doc.get("raw") or b""
        if doc.get("status", 200) and not 200 <= doc.get("status", 200) < 300:
            return None, "http_status", False
        if not raw.strip():
            return None, "empty_record", False
        ctype = (doc.get("content_type") or "").split(";")[0].strip()
        if not ctype.startswith(TEXTUAL):
            return None, "non_html", False
        if b"\x00" in raw[:4096]:
            return None, "binary", False
        text = decode(raw)
        if text.count("\ufffd") > max(10, len(text) // 100):
            return None, "bad_encoding", False
        return text, "", doc.get("kind") == "html" and ctype != "text/plain"

    def __call__(self, doc):
        text, reason, is_html = self.page(doc)
        doc.pop("raw", None)
        if text is None:
            return False, reason
        if is_html:
            try:
                text = _with_timeout(lambda: extract_html(text, self.extractor), self.timeout_s)
            except ExtractTimeout:
                return False, "extract_timeout"
        text = "\n".join(ln.strip() for ln in text.splitlines() if ln.strip())
        if not text:
            return False, "no_text_extracted"
        doc["text"] = text
        return True, ""


if __name__ == "__main__":
    from pipeline.curate.readers import read_file

    ex = HtmlExtractor()
    for d, _reason in read_file(sys.argv[1], 2_000_000):
        if d:
            print(d["url"], ex(d), len(d.get("text", "")))
