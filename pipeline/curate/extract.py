"""HTML to text: resiliparse (main content, default: fastest) or trafilatura (precision mode).

    .venv/bin/python -m pipeline.curate.extract ../shared/data/web/warcfile.warc.gz

Decodes with the charset resiliparse detects (EUC-JP, GBK ... included), sets aside
non-HTML, binary, empty and HTTP-error records with their reason, and bounds each
page's extraction time so one pathological page cannot stall a shard.
"""

from __future__ import annotations

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


def extract_html(html: str, extractor: str) -> str:
    if extractor == "trafilatura":
        import trafilatura

        return trafilatura.extract(html, favor_precision=True, include_comments=False) or ""
    from resiliparse.extract.html2text import extract_plain_text

    # Comment threads and bylines ("by admin on May 3 | 4 comments") are not main content: with
    # them, precision on pages of known content fell below trafilatura's (see `d2d bench curate`).
    return extract_plain_text(html, main_content=True, alt_texts=False, links=False, list_bullets=True,
                              comments=False, post_meta=False)


class HtmlExtractor(Step):
    name = "extract"

    def __init__(self, extractor: str = "resiliparse", timeout_s: float = 10.0):
        self.extractor, self.timeout_s = extractor, timeout_s

    def __call__(self, doc):
        raw: bytes = doc.pop("raw", b"") or b""
        if doc.get("status", 200) and not 200 <= doc.get("status", 200) < 300:
            return False, "http_status"
        if not raw.strip():
            return False, "empty_record"
        ctype = (doc.get("content_type") or "").split(";")[0].strip()
        if not ctype.startswith(TEXTUAL):
            return False, "non_html"
        if b"\x00" in raw[:4096]:
            return False, "binary"
        text = decode(raw)
        if text.count("\ufffd") > max(10, len(text) // 100):
            return False, "bad_encoding"
        if doc.get("kind") == "html" and ctype != "text/plain":
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
