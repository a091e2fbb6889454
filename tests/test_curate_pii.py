"""Curation PII (pipeline/curate/pii.py): Presidio's batch path with NER on candidate sentences only."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.curate.pii import PIIRedactor, candidate_ranges

PROSE = ("The garden was quiet this spring and the tomato plants grew slowly. "
         "Most of the work was done in the evenings, after the rain had stopped. ")


@pytest.fixture(scope="module")
def gated():
    return PIIRedactor(entities=["PERSON", "LOCATION", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"])


def test_names_and_contacts_removed_counts_by_type_only(gated):
    text = PROSE + "Yesterday we met Maria Keller in the park. Mail her at maria.k@mailbox.org or call (212) 555-0142."
    out, counts = gated.redact(text)
    assert "Maria Keller" not in out and "mailbox.org" not in out and "555-0142" not in out
    assert counts == {"PERSON": 1, "EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}
    assert out.startswith(PROSE)  # sentences without names come through untouched


def test_batch_equals_one_by_one_and_handles_empty(gated):
    texts = [PROSE + "Ask Priya Patel about it.", "", "no capitals here at all, just words.",
             "Dr. Wijtze called from 4111 1111 1111 1111? " + PROSE, PROSE * 3 + "James Johnson wrote back."]
    batch = gated.redact_batch(texts)
    assert batch == [gated.redact(t) for t in texts]
    assert batch[1] == ("", {}) and batch[2][1] == {}
    assert "Priya Patel" not in batch[0][0] and "Wijtze" not in batch[3][0] and "James Johnson" not in batch[4][0]


def test_gated_finds_what_full_ner_finds_on_capitalised_names(gated):
    full = PIIRedactor(entities=sorted(gated.entities), ner="full")
    texts = [PROSE + f"Last week {name} visited the old harbour. " + PROSE
             for name in ("Olivia Brown", "Lucas Dubois", "Noah Smith")]
    assert gated.redact_batch(texts) == full.redact_batch(texts)


def test_phone_offsets_right_far_into_a_long_text(gated):
    # Presidio's phonenumbers recognizer sees only windows around digit runs; offsets must map back.
    text = PROSE * 20 + "The office line is +44 20 7946 0958 on weekdays."
    results = gated.analyzer.analyze_iterator([text], language="en", entities=["PHONE_NUMBER"])[0]
    start = text.index("+44")
    assert results and all(start <= r.start and r.end <= start + 16 for r in results)
    assert "+44 20 7946 0958" in {text[r.start:r.end] for r in results}


def test_actor_batch_format_and_no_values_in_counts(gated):
    batch = {"text": np.array(["Call Emma Rossi on (617) 555-0199.", PROSE], dtype=object)}
    out = gated(batch)
    counts = [json.loads(c) for c in out["pii_counts"]]
    assert counts[0] == {"PERSON": 1, "PHONE_NUMBER": 1} and counts[1] == {}
    assert list(out["pii_total"]) == [2, 0]
    assert "Emma" not in out["text"][0] and "Emma" not in "".join(out["pii_counts"])


def test_candidate_ranges_skip_nameless_sentences_and_merge_within_a_paragraph():
    text = "The soil was dry. Anna Keller came. Bob Okafor left. The end.\nLena Wang wrote. It rained."
    ranges = [text[s:e] for s, e in candidate_ranges(text)]
    assert ranges == [" Anna Keller came. Bob Okafor left.", "Lena Wang wrote."]


def test_unknown_model_is_a_config_error():
    with pytest.raises(ValueError, match="pii_model"):
        PIIRedactor(model="no_such_spacy_model")
