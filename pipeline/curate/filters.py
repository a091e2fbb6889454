"""Document filters with their published defaults: URL, Gopher repetition and quality, C4, FineWeb, content safety.

    .venv/bin/python -c "from pipeline.curate.filters import GopherQualityFilter; print(GopherQualityFilter()({'text': 'too short'}))"

Each is a pure `Step`: `(keep, reason)`, reasons named like datatrove's
(`gopher_short_doc`, `c4_too_few_sentences`, ...). The C4 filter also cleans lines.
Thresholds come from `CurateConfig`; the defaults follow datatrove/FineWeb.
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import urlsplit

from pipeline.curate import textsplit
from pipeline.curate.steps import Step

#: UT1 categories read from blocklist sources unless configured otherwise.
DEFAULT_CATEGORIES = ("adult", "phishing", "malware")
# Demo-only built-in lists, used when no file or URL is configured (url_blocklist_files,
# blocked_domain_files, bad_words_files).
BLOCKED_DOMAINS = {"pornhub.com", "xvideos.com", "xnxx.com", "xhamster.com", "redtube.com", "youporn.com",
                   "malware-traffic-analysis.net", "bit-phish.example", "free-crypto-giveaway.example"}
HARD_BANNED_URL_WORDS = {"porn", "xxx", "hentai", "xvideos", "camgirl"}
SOFT_BANNED_URL_WORDS = {"sex", "adult", "nude", "escort", "casino", "viagra", "cialis", "naked", "milf", "fetish"}
BAD_WORDS = {"porn", "xxx", "fuck", "fucking", "cunt", "cock", "pussy", "blowjob", "hentai", "milf", "dildo",
             "nigger", "faggot", "bestiality", "incest", "rape"}
STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
C4_END_PUNCT = (".", "?", "!", '"', "'")
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
_WORD = re.compile(r"\w+", re.UNICODE)
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")
_PARAGRAPH = re.compile(r"\n{2,}")
_LINES = re.compile("\n+")
_TERMINAL = tuple(textsplit.TERMINAL_PUNCTUATION)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower().removeprefix("www.")
    except ValueError:
        return ""


def _domain_list(files: list[str], categories, cache_dir: str, sha256) -> dict[str, str]:
    """Listed domains -> category from the configured sources; the built-in demo list when none is configured."""
    if not files:
        return dict.fromkeys(BLOCKED_DOMAINS, "")
    from pipeline.curate.blocklists import load_domains

    return load_domains(list(files), list(categories), cache_dir, sha256)


def _blocked_reason(prefix: str, category: str) -> str:
    """`url_blocklisted_adult`, or `url_blocklisted_domain` for the demo list (which has no categories)."""
    return f"{prefix}_{category}" if category else f"{prefix}_domain"


class URLFilter(Step):
    """FineWeb's URL filter: listed domains (UT1 categories or plain files, `pipeline.curate.blocklists`),
    hard-banned URL words, and `soft_threshold` soft-banned ones. Reason `url_blocklisted_CATEGORY`
    (`url_blocklisted_domain` for the built-in demo list)."""

    name = "url_filter"

    def __init__(self, blocklist_files: list[str] = (), soft_threshold: int = 2,
                 categories: list[str] = DEFAULT_CATEGORIES, cache_dir: str = "", sha256: dict | None = None):
        self.blocked = _domain_list(list(blocklist_files), categories, cache_dir, sha256)
        self.soft_threshold = soft_threshold

    @classmethod
    def from_config(cls, cfg) -> URLFilter:
        return cls(cfg.url_blocklist_files, cfg.url_soft_banned_threshold, cfg.url_blocklist_categories,
                   cfg.blocklist_cache_dir, cfg.blocklist_sha256)

    def __call__(self, doc):
        url = (doc.get("url") or "").lower()
        if not url:
            return True, ""
        from pipeline.curate.blocklists import domain_category

        cat = domain_category(host_of(url), url, self.blocked)
        if cat is not None:
            return False, _blocked_reason("url_blocklisted", cat)
        toks = set(re.split(r"[^a-z0-9]+", url))
        if toks & HARD_BANNED_URL_WORDS:
            return False, "url_hard_banned_word"
        if len(toks & SOFT_BANNED_URL_WORDS) >= self.soft_threshold:
            return False, "url_soft_banned_words"
        return True, ""


def _find_duplicates(items: list[str]) -> tuple[int, int]:
    """(duplicate items, characters in them), first occurrences not counted."""
    seen, n, chars = set(), 0, 0
    for x in items:
        if x in seen:
            n, chars = n + 1, chars + len(x)
        else:
            seen.add(x)
    return n, chars


def _top_ngram_chars(ws: list[str], n: int) -> int:
    grams = Counter(" ".join(ws[i:i + n]) for i in range(len(ws) - n + 1))
    gram, count = grams.most_common(1)[0]
    return len(gram) * count


def _dup_ngram_chars(ws: list[str], n: int) -> int:
    """Characters of n-grams seen before, jumping over each repeat (Gopher's non-overlapping count)."""
    seen, chars, i = set(), 0, 0
    while i < len(ws) - n + 1:
        gram = "".join(ws[i:i + n])
        if gram in seen:
            chars += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return chars


class GopherRepetitionFilter(Step):
    """Gopher's repetition rules (Rae et al. 2021, table A1), decided as datatrove's class does."""

    name = "gopher_repetition"

    def __init__(self, dup_line_frac=0.3, dup_para_frac=0.3, dup_line_char_frac=0.2, dup_para_char_frac=0.2,
                 top_ngrams=None, dup_ngrams=None):
        self.lf, self.pf, self.lcf, self.pcf = dup_line_frac, dup_para_frac, dup_line_char_frac, dup_para_char_frac
        self.top = {int(k): float(v) for k, v in (top_ngrams or {"2": 0.2, "3": 0.18, "4": 0.16}).items()}
        self.dup = {int(k): float(v) for k, v in (dup_ngrams or {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}).items()}

    def __call__(self, doc):
        text = doc["text"]
        if not text:
            return False, "gopher_empty"
        # A threshold of 0 switches its rule off, as in datatrove.
        paras = _PARAGRAPH.split(text.strip())
        n, chars = _find_duplicates(paras)
        if self.pf and n / len(paras) > self.pf:
            return False, "gopher_dup_para_frac"
        if self.pcf and chars / len(text) > self.pcf:
            return False, "gopher_dup_para_char_frac"
        lines = _LINES.split(text)
        n, chars = _find_duplicates(lines)
        if self.lf and n / len(lines) > self.lf:
            return False, "gopher_dup_line_frac"
        if self.lcf and chars / len(text) > self.lcf:
            return False, "gopher_dup_line_char_frac"
        ws = textsplit.words(text)
        for n_, thr in self.top.items():
            if len(ws) >= n_ and _top_ngram_chars(ws, n_) / len(text) > thr:
                return False, f"gopher_top_{n_}_gram"
        for n_, thr in self.dup.items():
            if _dup_ngram_chars(ws, n_) / len(text) > thr:
                return False, f"gopher_duplicated_{n_}_n_grams"
        return True, ""


class GopherQualityFilter(Step):
    """Gopher's quality rules on spaCy words, decided as datatrove's class does."""

    name = "gopher_quality"

    def __init__(self, min_words=50, max_words=100_000, min_avg=3.0, max_avg=10.0, max_symbol=0.1,
                 max_bullet=0.9, max_ellipsis=0.3, max_non_alpha=0.8, min_stop=2):
        self.a = (min_words, max_words, min_avg, max_avg, max_symbol, max_bullet, max_ellipsis, max_non_alpha, min_stop)

    def __call__(self, doc):
        min_w, max_w, min_avg, max_avg, max_sym, max_bul, max_ell, max_na, min_stop = self.a
        text = doc["text"]
        ws = textsplit.words(text)
        n_words = len(ws)
        content = [w for w in ws if any(ch not in textsplit.PUNCTUATION_SET for ch in w)]
        n = len(content)
        if min_w and n < min_w:
            return False, "gopher_short_doc"
        if max_w and n > max_w:
            return False, "gopher_long_doc"
        avg = sum(map(len, content)) / n if n else float("nan")
        if min_avg and avg < min_avg:
            return False, "gopher_below_avg_threshold"
        if max_avg and avg > max_avg:
            return False, "gopher_above_avg_threshold"
        if max_sym and text.count("#") / n_words > max_sym:
            return False, "gopher_too_many_hashes"
        if max_sym and (text.count("...") + text.count("\u2026")) / n_words > max_sym:
            return False, "gopher_too_many_ellipsis"
        lines = text.splitlines()
        if max_bul and sum(ln.lstrip().startswith(("\u2022", "-")) for ln in lines) / len(lines) > max_bul:
            return False, "gopher_too_many_bullets"
        if max_ell and sum(ln.rstrip().endswith(("...", "\u2026")) for ln in lines) / len(lines) > max_ell:
            return False, "gopher_too_many_end_ellipsis"
        if max_na and sum(any(c.isalpha() for c in w) for w in ws) / n_words < max_na:
            return False, "gopher_below_alpha_threshold"
        if min_stop and len(STOP_WORDS.intersection(ws)) < min_stop:
            return False, "gopher_enough_stop_words"
        doc["n_words"] = n
        doc["mean_word_length"] = round(avg, 3)
        return True, ""


class C4QualityFilter(Step):
    """C4's line cleaning (rewrites the text) and document rules, in datatrove's order: a line is judged
    (long word, citations removed, terminal punctuation, 3 words) before "lorem ipsum" and "{" in it drop the
    whole document; sentences are counted by spaCy's sentencizer over the kept lines."""

    name = "c4_quality"

    def __init__(self, min_words_per_line=3, max_word_length=1000, min_sentences=5):
        self.min_wpl, self.max_wl, self.min_sent = min_words_per_line, max_word_length, min_sentences

    def __call__(self, doc):
        text = doc["text"]
        lines = text.splitlines()
        kept = []
        for line in lines:
            line = line.strip()
            ws = line.split()
            if self.max_wl != -1 and any(len(w) > self.max_wl for w in ws):
                continue
            line = _CITATION.sub("", line)
            if not line.endswith(C4_END_PUNCT) or line.endswith("..."):
                continue
            if len(ws) < self.min_wpl:
                continue
            low = line.lower()
            if "lorem ipsum" in low:
                return False, "c4_lorem_ipsum"
            if "javascript" in low:
                continue
            if "{" in line:
                return False, "c4_curly_bracket"
            if any(p in low for p in C4_POLICY):
                continue
            kept.append(line)
        sentences = sum(textsplit.sentence_counts(kept)) if self.min_sent != -1 else 0
        if sentences < self.min_sent:
            return False, "c4_too_few_sentences"
        doc["c4_lines_kept_frac"] = round(len(kept) / max(len(lines), 1), 3)
        doc["text"] = "\n".join(kept).strip()
        return True, ""


class FineWebQualityFilter(Step):
    """FineWeb's line rules (Penedo et al. 2024), decided as datatrove's class does."""

    name = "fineweb_quality"

    def __init__(self, line_punct_thr=0.12, short_line_thr=0.67, short_line_length=30, char_dup_ratio=0.01,
                 new_line_ratio=0.3):
        self.a = (line_punct_thr, short_line_thr, short_line_length, char_dup_ratio, new_line_ratio)

    def __call__(self, doc):
        punct, short_thr, short_len, dup_thr, nl_thr = self.a
        text = doc["text"]
        lines = [ln for ln in text.split("\n") if ln.strip()]
        if not lines:
            return False, "fineweb_empty"
        if sum(ln.endswith(_TERMINAL) for ln in lines) / len(lines) < punct:
            return False, "fineweb_line_punct_ratio"
        if sum(len(ln) <= short_len for ln in lines) / len(lines) > short_thr:
            return False, "fineweb_short_line_ratio"
        if _find_duplicates(lines)[1] / len(text.replace("\n", "")) > dup_thr:
            return False, "fineweb_char_dup_ratio"
        # spaCy never joins two whitespace-separated chunks, so len(text.split()) bounds the word count from
        # below: under the ratio with it, the text is under the ratio with spaCy's words too.
        newlines = text.count("\n")
        if newlines / max(len(text.split()), 1) > nl_thr and newlines / max(len(textsplit.words(text)), 1) > nl_thr:
            return False, "fineweb_list_ratio"
        return True, ""


class ContentSafetyFilter(Step):
    """Content safety: the page's domain category and its bad-word ratio.

    `badword_ratio` = (words of the text on the word list + occurrences of its multi-word phrases) /
    words of the text (`\\w+` tokens, lower-cased). `safety_score` = 1.0 when the host (or a parent
    domain) is in a blocked category, else min(1, badword_ratio / max_badword_ratio). Dropped: a
    blocked domain (`unsafe_domain_CATEGORY`; `unsafe_domain` for the built-in demo list) or a ratio
    above `max_badword_ratio` (`badwords_ratio`). Without configured lists the small built-in ones
    (demo only) are used.
    """

    name = "content_safety"

    def __init__(self, domain_files: list[str] = (), max_badword_ratio: float = 0.005, *,
                 categories: list[str] = DEFAULT_CATEGORIES, word_files: list[str] = (), cache_dir: str = "",
                 sha256: dict | None = None):
        self.domains = _domain_list(list(domain_files), categories, cache_dir, sha256)
        if word_files:
            from pipeline.curate.blocklists import load_words

            listed = load_words(list(word_files), cache_dir, sha256)
        else:
            listed = BAD_WORDS
        self.words = {w for w in listed if " " not in w}
        phrases = sorted((w for w in listed if " " in w), key=len, reverse=True)
        self.phrases = re.compile(r"\b(?:" + "|".join(map(re.escape, phrases)) + r")\b") if phrases else None
        self.max_ratio = max_badword_ratio

    @classmethod
    def from_config(cls, cfg) -> ContentSafetyFilter:
        return cls(cfg.blocked_domain_files, cfg.max_badword_ratio, categories=cfg.url_blocklist_categories,
                   word_files=cfg.bad_words_files, cache_dir=cfg.blocklist_cache_dir, sha256=cfg.blocklist_sha256)

    def score(self, text: str) -> float:
        ws = words(text)
        bad = sum(w in self.words for w in ws)
        if self.phrases is not None:
            bad += len(self.phrases.findall(" ".join(ws)))
        return bad / max(len(ws), 1)

    def __call__(self, doc):
        from pipeline.curate.blocklists import domain_category

        url = (doc.get("url") or "").lower()
        cat = domain_category(host_of(url), url, self.domains) if url else None
        ratio = self.score(doc["text"])
        doc["badword_ratio"] = round(ratio, 5)
        doc["safety_score"] = 1.0 if cat is not None else round(min(1.0, ratio / self.max_ratio) if self.max_ratio else float(ratio > 0), 4)
        if cat is not None:
            return False, "unsafe_domain" + (f"_{cat}" if cat else "")
        if ratio > self.max_ratio:
            return False, "badwords_ratio"
        return True, ""
