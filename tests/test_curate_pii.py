"""Curation PII (pipeline/curate/pii.py): Presidio's batch path with NER only where a name can be
(candidate sentences, or windows around their capitalised words)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pipeline.curate.pii import WINDOW_CONTEXT, PIIRedactor, candidate_ranges, window_ranges

PROSE = ("The garden was quiet this spring and the tomato plants grew slowly. "
         "Most of the work was done in the evenings, after the rain had stopped. ")


ENTITIES = ["PERSON", "LOCATION", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD"]


@pytest.fixture(scope="module")
def redactor():
    """The default redactor (NER on windows around name candidates)."""
    return PIIRedactor(entities=ENTITIES)


@pytest.fixture(scope="module")
def gated():
    return PIIRedactor(entities=ENTITIES, ner="gated")


def test_names_and_contacts_removed_counts_by_type_only(redactor):
    text = PROSE + "Yesterday we met Maria Keller in the park. Mail her at maria.k@mailbox.org or call (212) 555-0142."
    out, counts = redactor.redact(text)
    assert "Maria Keller" not in out and "mailbox.org" not in out and "555-0142" not in out
    assert counts == {"PERSON": 1, "EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1}
    assert out.startswith(PROSE)  # sentences without names come through untouched


def test_batch_equals_one_by_one_and_handles_empty(redactor):
    texts = [PROSE + "Ask Priya Patel about it.", "", "no capitals here at all, just words.",
             "Dr. Wijtze called from 4111 1111 1111 1111? " + PROSE, PROSE * 3 + "James Johnson wrote back."]
    batch = redactor.redact_batch(texts)
    assert batch == [redactor.redact(t) for t in texts]
    assert batch[1] == ("", {}) and batch[2][1] == {}
    assert "Priya Patel" not in batch[0][0] and "Wijtze" not in batch[3][0] and "James Johnson" not in batch[4][0]


def test_windows_and_sentences_find_what_full_ner_finds_on_capitalised_names(redactor, gated):
    full = PIIRedactor(entities=sorted(redactor.entities), ner="full")
    texts = [PROSE + f"Last week {name} visited the old harbour. " + PROSE
             for name in ("Olivia Brown", "Lucas Dubois", "Noah Smith")]
    assert redactor.redact_batch(texts) == full.redact_batch(texts) == gated.redact_batch(texts)


def test_windows_find_what_sentences_find_at_window_and_line_edges(redactor, gated):
    # Each case once broke a window rule: a name in a one-name line (a trailing newline changes the
    # model's output), a place right before the final stop, a window cut inside a sentence (the model
    # found "mandolin coda" at the cut), lines whose windows touch (must not merge across a line).
    texts = ["Tiffany Kilfoyle\nNera Economic Consulting\n74 106 Kate Edger Place, BINSTED, Vatican City\n69 987 88 37",
             "The Princess Royal arrived at Nugeri this morning from Niger.",
             "A great song made even greater by a mandolin coda (not by Janice Brkić MD).",
             "Taylor Barabás\nAreavibes Inc\n27 2279 President St\nGleniti\n, nan\n Canada 32586"]
    assert redactor.spans_batch(texts) == gated.spans_batch(texts)


def test_window_ranges_merge_overlaps_and_stay_in_their_line():
    far = " and then the rain came down on the fields for many long hours"
    text = "Anna Keller came." + far + ", said Bob Okafor and Lena Wang.\nOmar Haddad wrote."
    pieces = window_ranges(text)
    assert [text[s:e] for s, e, *_ in pieces][1:] == [
        "many long hours, said Bob Okafor and Lena Wang.\n",  # both names' windows overlap: one piece; to the line's end
        "Omar Haddad wrote."]
    s, e, zs, ze = pieces[0]
    assert s == zs == 0 and text[s:e].startswith("Anna Keller came.") and len(text[s:e].split()) == 2 + WINDOW_CONTEXT
    assert text[ze:].startswith(" came.")  # a cut end: only the name is the zone
    assert all(s <= zs < ze <= e and "\n" not in text[s:e].rstrip("\n") for s, e, zs, ze in pieces)


def test_window_spans_map_back_to_document_offsets(redactor):
    # Names at the text's start (window edge = piece edge), deep into a long line (a cut window),
    # and two names whose windows overlap; offsets are checked against the document itself.
    names = {"Maria Keller", "Priya Patel", "James Johnson", "Olivia Brown"}
    text = ("Maria Keller planted the beans. " + PROSE * 4 + "In the end Priya Patel and James Johnson "
            "carried the baskets home. " + PROSE + "the last of the bread went to Olivia Brown")
    found = {text[s:e] for s, e, ent, _ in redactor.spans_batch([text, PROSE])[0] if ent == "PERSON"}
    assert found == names


def test_phone_offsets_right_far_into_a_long_text(redactor):
    # Presidio's phonenumbers recognizer sees only windows around digit runs; offsets must map back.
    text = PROSE * 20 + "The office line is +44 20 7946 0958 on weekdays."
    results = redactor.analyzer.analyze_iterator([text], language="en", entities=["PHONE_NUMBER"])[0]
    start = text.index("+44")
    assert results and all(start <= r.start and r.end <= start + 16 for r in results)
    assert "+44 20 7946 0958" in {text[r.start:r.end] for r in results}


def test_actor_batch_format_and_no_values_in_counts(redactor):
    batch = {"text": np.array(["Call Emma Rossi on (617) 555-0199.", PROSE], dtype=object)}
    out = redactor(batch)
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
    with pytest.raises(ValueError, match="pii_ner"):
        PIIRedactor(ner="sentences")
