"""Curation: pure steps (no Ray): datasketch equivalence, readers on broken files, filters, PII."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import shared

from pipeline.curate.config import CurateConfig
from pipeline.curate.filters import GopherQualityFilter, GopherRepetitionFilter, URLFilter
from pipeline.curate.minhash import MinHasher, jaccard, shingles
from pipeline.curate.pii import PIIRedactor
from pipeline.curate.readers import expand_inputs, read_file


def test_signatures_equal_datasketch():
    from datasketch import MinHash

    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(300)]
    texts = [" ".join(rng.choice(vocab, n)) for n in (3, 20, 400)] + ["", "Hello, World!"]
    for seed, perms in ((1, 112), (7, 64)):
        sigs = MinHasher(perms, seed, 5).signatures(texts)
        for t, sig in zip(texts, sigs, strict=True):
            m = MinHash(num_perm=perms, seed=seed)
            for sh in shingles(t, 5):
                m.update(sh)
            assert np.array_equal(m.hashvalues, sig)


def test_broken_warcs_keep_good_records_and_count_bad_ones():
    files = expand_inputs([str(shared("web/warcio"))])
    reasons, docs = {}, 0
    for p in files:
        for d, r in read_file(p, 2_000_000):
            docs += d is not None
            if d is None:
                reasons[r] = reasons.get(r, 0) + 1
    assert docs >= 3
    assert reasons.get("revisit_record") and reasons.get("malformed_record")
    clipped = [r for _, r in read_file(str(shared("web/clipped.warc.gz")), 2_000_000)]
    assert clipped == ["clipped_record"]


def test_filters_drop_with_reasons():
    assert URLFilter()({"url": "http://www.pornhub.com/x"}) == (False, "url_blocklisted_domain")
    assert URLFilter()({"url": "https://example.org/blog"})[0]
    assert GopherQualityFilter()({"text": "too short"}) == (False, "gopher_short_doc")
    rep = "\n".join(["the same line again and again"] * 10)
    assert GopherRepetitionFilter()({"text": rep})[1].startswith("gopher_dup")


def test_regex_pii_removes_contacts_and_counts_types():
    text = "Mail jane.doe@corp.example.com, call (212) 555-1234 or +44 20 7946 0958; card 4111 1111 1111 1111."
    out, counts = PIIRedactor(mode="regex").redact(text)
    assert "@" not in out and "555-1234" not in out and "4111" not in out
    assert counts == {"EMAIL_ADDRESS": 1, "PHONE_NUMBER": 2, "CREDIT_CARD": 1}


def test_bad_config_names_field():
    with pytest.raises(ValueError, match="lang_threshold"):
        CurateConfig(lang_threshold=2)
    with pytest.raises(ValueError, match="minhash_bands"):
        CurateConfig(minhash_bands=0)
    with pytest.raises(ValueError, match="crawl: unknown crawler field 'max_pagez'"):
        CurateConfig(crawl={"max_pagez": 3})


def test_jaccard_of_shingles():
    a = shingles("one two three four five six seven", 5)
    assert jaccard(a, a) == 1.0 and jaccard(a, shingles("x y z w v u", 5)) == 0.0


def test_http_payload_undoes_chunked_framing_and_gzip():
    import gzip
    import zlib

    from pipeline.curate.readers import http_payload

    html = b"<html><body><p>Hello chunked world</p></body></html>"
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(html[i:i + 7]), html[i:i + 7]) for i in range(0, len(html), 7)) + b"0\r\n\r\n"
    assert http_payload(framed, "chunked", "", 10**6) == html
    assert http_payload(html, "chunked", "", 10**6) == html  # stored already decoded under a stale header
    assert http_payload(framed, "", "", 10**6) == framed  # no header: bytes as stored
    assert http_payload(gzip.compress(html), "", "gzip", 10**6) == html
    assert http_payload(zlib.compress(html), "", "deflate", 10**6) == html
    assert http_payload(b"\x1f\x8b broken", "", "gzip", 10**6) == b"\x1f\x8b broken"  # left for later steps to judge


def test_fastwarc_bodies_match_warcio_content_stream():
    """Real crawls store chunked bodies (dolma's wget WARCs) and gzip ones (warcio's example): what the
    fast reader yields is the decoded body warcio gives, so no chunk size ("7d71") leaks into the text."""
    from warcio.archiveiterator import ArchiveIterator

    files = [str(shared("web/dolma/sample-0001.warc.gz")), str(shared("web/warcio/example.warc.gz"))]
    for f in files:
        ours = {d["url"]: d["raw"] for d, _ in read_file(f, 10_000_000) if d}
        with open(f, "rb") as fh:
            ref = {r.rec_headers.get_header("WARC-Target-URI").strip("<>"): r.content_stream().read()
                   for r in ArchiveIterator(fh) if r.rec_type == "response"}
        assert ref and all(ours[u] == body for u, body in ref.items())
