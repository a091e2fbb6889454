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

from pipeline.curate.steps import Step

# Small built-in lists; real deployments add files (url_blocklist_files, blocked_domain_files).
BLOCKED_DOMAINS = {"pornhub.com", "xvideos.com", "xnxx.com", "xhamster.com", "redtube.com", "youporn.com",
                   "malware-traffic-analysis.net", "bit-phish.example", "free-crypto-giveaway.example"}
HARD_BANNED_URL_WORDS = {"porn", "xxx", "hentai", "xvideos", "camgirl"}
SOFT_BANNED_URL_WORDS = {"sex", "adult", "nude", "escort", "casino", "viagra", "cialis", "naked", "milf", "fetish"}
BAD_WORDS = {"porn", "xxx", "fuck", "fucking", "cunt", "cock", "pussy", "blowjob", "hentai", "milf", "dildo",
             "nigger", "faggot", "bestiality", "incest", "rape"}
STOP_WORDS = {"the", "be", "to", "of", "and", "that", "have", "with"}
END_PUNCT = (".", "?", "!", '"', "'", "\u201d", "\u2019")
C4_POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
BULLETS = ("\u2022", "\u2023", "\u25b6", "\u25cf", "\u25e6", "\u25a0", "\u25a1", "\u25aa", "\u25ab", "\u2013", "-", "*")
_WORD = re.compile(r"\w+", re.UNICODE)
_CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]")


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def host_of(url: str) -> str:
    try:
        return (urlsplit(url).hostname or "").lower().removeprefix("www.")
    except ValueError:
        return ""


def _load_lines(paths: list[str]) -> set[str]:
    out: set[str] = set()
    for p in paths:
        with open(p, encoding="utf-8") as f:
            out |= {ln.strip().lower() for ln in f if ln.strip() and not ln.startswith("#")}
    return out


def _domain_hit(host: str, domains: set[str]) -> bool:
    parts = host.split(".")
    return any(".".join(parts[i:]) in domains for i in range(len(parts) - 1))


class URLFilter(Step):
    name = "url_filter"

    def __init__(self, blocklist_files: list[str] = (), soft_threshold: int = 2):
        self.blocked = BLOCKED_DOMAINS | _load_lines(list(blocklist_files))
        self.soft_threshold = soft_threshold

    def __call__(self, doc):
        url = (doc.get("url") or "").lower()
        if not url:
            return True, ""
        host = host_of(url)
        if _domain_hit(host, self.blocked) or url in self.blocked:
            return False, "url_blocklisted_domain"
        toks = set(re.split(r"[^a-z0-9]+", url))
        if toks & HARD_BANNED_URL_WORDS:
            return False, "url_hard_banned_word"
        if len(toks & SOFT_BANNED_URL_WORDS) >= self.soft_threshold:
            return False, "url_soft_banned_words"
        return True, ""


class GopherRepetitionFilter(Step):
    name = "gopher_repetition"

    def __init__(self, dup_line_frac=0.3, dup_para_frac=0.3, dup_line_char_frac=0.2, dup_para_char_frac=0.2,
                 top_ngrams=None, dup_ngrams=None):
        self.lf, self.pf, self.lcf, self.pcf = dup_line_frac, dup_para_frac, dup_line_char_frac, dup_para_char_frac
        self.top = {int(k): float(v) for k, v in (top_ngrams or {"2": 0.2, "3": 0.18, "4": 0.16}).items()}
        self.dup = {int(k): float(v) for k, v in (dup_ngrams or {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10}).items()}

    @staticmethod
    def _dups(items: list[str]) -> tuple[int, int]:
        seen, n, chars = set(), 0, 0
        for x in items:
            if x in seen:
                n, chars = n + 1, chars + len(x)
            seen.add(x)
        return n, chars

    def __call__(self, doc):
        text = doc["text"]
        paras = [p for p in re.split(r"\n{2,}", text.strip()) if p]
        n, c = self._dups(paras)
        if paras and n / len(paras) > self.pf:
            return False, "gopher_dup_para_frac"
        if paras and c / max(len(text), 1) > self.pcf:
            return False, "gopher_dup_para_char_frac"
        lines = [ln for ln in text.split("\n") if ln]
        n, c = self._dups(lines)
        if lines and n / len(lines) > self.lf:
            return False, "gopher_dup_line_frac"
        if lines and c / max(len(text), 1) > self.lcf:
            return False, "gopher_dup_line_char_frac"
        ws = words(text)
        total = sum(len(w) for w in ws) or 1
        for n_, thr in self.top.items():
            grams = Counter(tuple(ws[i:i + n_]) for i in range(len(ws) - n_ + 1))
            if grams:
                g, cnt = grams.most_common(1)[0]
                if cnt > 1 and sum(len(w) for w in g) * cnt / total > thr:
                    return False, f"gopher_top_{n_}_gram"
        for n_, thr in self.dup.items():
            seen, covered = set(), [False] * len(ws)
            for i in range(len(ws) - n_ + 1):
                g = tuple(ws[i:i + n_])
                if g in seen:
                    covered[i:i + n_] = [True] * n_
                seen.add(g)
            if sum(len(w) for w, c in zip(ws, covered, strict=True) if c) / total > thr:
                return False, f"gopher_dup_{n_}_gram"
        return True, ""


class GopherQualityFilter(Step):
    name = "gopher_quality"

    def __init__(self, min_words=50, max_words=100_000, min_avg=3.0, max_avg=10.0, max_symbol=0.1,
                 max_bullet=0.9, max_ellipsis=0.3, max_non_alpha=0.8, min_stop=2):
        self.a = (min_words, max_words, min_avg, max_avg, max_symbol, max_bullet, max_ellipsis, max_non_alpha, min_stop)

    def __call__(self, doc):
        min_w, max_w, min_avg, max_avg, max_sym, max_bul, max_ell, max_na, min_stop = self.a
        text = doc["text"]
        toks = text.split()
        ws = [w for w in toks if any(ch.isalnum() for ch in w)]
        n = len(ws)
        if n < min_w:
            return False, "gopher_short_doc"
        if n > max_w:
            return False, "gopher_long_doc"
        avg = sum(len(w) for w in ws) / n
        if avg < min_avg:
            return False, "gopher_below_avg_word_length"
        if avg > max_avg:
            return False, "gopher_above_avg_word_length"
        if (text.count("#") + text.count("...") + text.count("\u2026")) / n > max_sym:
            return False, "gopher_symbol_word_ratio"
        lines = text.splitlines() or [""]
        if sum(ln.lstrip().startswith(BULLETS) for ln in lines) / len(lines) > max_bul:
            return False, "gopher_bullet_lines"
        if sum(ln.rstrip().endswith(("...", "\u2026")) for ln in lines) / len(lines) > max_ell:
            return False, "gopher_ellipsis_lines"
        if sum(any(ch.isalpha() for ch in w) for w in toks) / max(len(toks), 1) < max_na:
            return False, "gopher_below_alpha_threshold"
        if sum(w.lower() in STOP_WORDS for w in toks) < min_stop:
            return False, "gopher_enough_stop_words"
        doc["n_words"] = n
        doc["mean_word_length"] = round(avg, 3)
        return True, ""


class C4QualityFilter(Step):
    """C4's line cleaning (rewrites the text) and document rules."""

    name = "c4_quality"

    def __init__(self, min_words_per_line=3, max_word_length=1000, min_sentences=5):
        self.min_wpl, self.max_wl, self.min_sent = min_words_per_line, max_word_length, min_sentences

    def __call__(self, doc):
        text = doc["text"]
        low = text.lower()
        if "lorem ipsum" in low:
            return False, "c4_lorem_ipsum"
        if "{" in text:
            return False, "c4_curly_bracket"
        kept = []
        for line in text.split("\n"):
            line = _CITATION.sub("", line.strip())
            ws = line.split()
            if not line.endswith(END_PUNCT) or line.endswith("..."):
                continue
            if len(ws) < self.min_wpl or any(len(w) > self.max_wl for w in ws):
                continue
            ll = line.lower()
            if "javascript" in ll or any(p in ll for p in C4_POLICY):
                continue
            kept.append(line)
        cleaned = "\n".join(kept)
        if len(re.findall(r"[.!?]+(?:\s|$)", cleaned)) < self.min_sent:
            return False, "c4_too_few_sentences"
        doc["c4_lines_kept_frac"] = round(len(kept) / max(len(text.split("\n")), 1), 3)
        doc["text"] = cleaned
        return True, ""


class FineWebQualityFilter(Step):
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
        if sum(ln.endswith(END_PUNCT) for ln in lines) / len(lines) < punct:
            return False, "fineweb_line_punct_ratio"
        if sum(len(ln) <= short_len for ln in lines) / len(lines) > short_thr:
            return False, "fineweb_short_line_ratio"
        _, dup_chars = GopherRepetitionFilter._dups(lines)
        if dup_chars / max(len(text.replace("\n", "")), 1) > dup_thr:
            return False, "fineweb_char_dup_ratio"
        if text.count("\n") / max(len(text.split()), 1) > nl_thr:
            return False, "fineweb_list_ratio"
        return True, ""


class ContentSafetyFilter(Step):
    name = "content_safety"

    def __init__(self, domain_files: list[str] = (), max_badword_ratio: float = 0.005):
        self.domains = BLOCKED_DOMAINS | _load_lines(list(domain_files))
        self.max_ratio = max_badword_ratio

    def __call__(self, doc):
        if _domain_hit(host_of(doc.get("url") or ""), self.domains):
            return False, "unsafe_domain"
        ws = words(doc["text"])
        ratio = sum(w in BAD_WORDS for w in ws) / max(len(ws), 1)
        doc["badword_ratio"] = round(ratio, 5)
        if ratio > self.max_ratio:
            return False, "badwords_ratio"
        return True, ""
