"""Presidio loads once for the module (seconds); each case is a few ms."""

import pytest

from guardrails.base import ScanContext
from guardrails.pii import PiiConfig, PiiGuard, name_candidate_spans

G = PiiGuard()


@pytest.mark.parametrize("text, entity", [
    ("write to jane.doe@example.com please", "EMAIL_ADDRESS"),
    ("card 4111 1111 1111 1111", "CREDIT_CARD"),
    ("IBAN DE89 3704 0044 0532 0130 00", "IBAN_CODE"),
    ("server at 192.168.10.20 is down", "IP_ADDRESS"),
    ("call me on (212) 555-0187", "PHONE_NUMBER"),
    ("My name is Wijtze Hoekstra", "PERSON"),
    ("Yesterday Maria Gonzalez opened an account", "PERSON"),
    ("Her maiden name is Oksnevad", "PERSON"),                      # name cue
    ("please transfer it to my friend john smith tomorrow", "PERSON"),  # writer not using capitals
    ("Send it to Tiffany Kowalczyk now", "PERSON"),                 # spaCy ORG, starts with a given name
    ("Fax: +1-944-435-4352 x123", "PHONE_NUMBER"),                  # unassigned area code + extension
    ("Dial 001-303-555-0199x88 for billing", "PHONE_NUMBER"),
    ("my mobile is 06 12 34 56 78", "PHONE_NUMBER"),               # digit groups next to a phone word
    ("reach me at +44 20 7946 0958", "PHONE_NUMBER"),
])
def test_pii_found_and_redacted(text, entity):
    v = G.scan(text, ScanContext())
    assert v.action == "redact" and f"<{entity}>" in v.sanitized_text
    assert all(text[s.start:s.end] not in " ".join(v.reasons) for s in v.spans)


@pytest.mark.parametrize("text", ["How do I kill a Python process?", "What is 17 times 23?",
                                  "Email me the steps to reset a router.",
                                  "Tell me about Ray Serve",
                                  "Use Ray Tune with PyTorch Lightning",
                                  "Is Morgan Stanley open on Sundays?",
                                  "What is 12 345 678 plus 10 000 000?",
                                  "Compare 2023-10-12 with 2021-01-01",
                                  "Ship it to 1755 Nelson Mandela Drive"])
def test_no_pii(text):
    assert G.scan(text, ScanContext()).allowed and G.scan(text, ScanContext()).action == "allow"


def test_reversible_vault_restores_user_values():
    g = PiiGuard(PiiConfig(reversible=True))
    ctx = ScanContext()
    v = g.scan("I'm Anna Berg, mail anna.berg@example.se", ctx)
    assert "<EMAIL_ADDRESS_1>" in v.sanitized_text and "anna.berg" not in v.sanitized_text
    assert ctx.pii_vault.restore("Hi, we wrote to <EMAIL_ADDRESS_1>.") == "Hi, we wrote to anna.berg@example.se."


def test_gate_skips_sentences_without_names_and_config_errors():
    assert name_candidate_spans("How do I do this? What is it.") == []
    assert name_candidate_spans("Ask Bob. Why?") == [(0, 8)]
    assert name_candidate_spans("It cost $249.99 on the 14th. Mail a@b.com now.") == []
    assert name_candidate_spans("hi there. ask bob? ok") == [(0, 9), (9, 18)]
    with pytest.raises(ValueError, match="spacy_model"):
        PiiGuard(PiiConfig(spacy_model="en_core_web_nope"))
    with pytest.raises(ValueError, match="reversible"):
        PiiConfig(reversible=True, operator="mask")


def test_ray_serve_is_no_person_but_henry_ford_is():
    assert G.scan("Tell me about Ray Serve", ScanContext()).action == "allow"
    v = G.scan("Henry Ford founded a company.", ScanContext())
    assert v.sanitized_text.startswith("<PERSON>")
    assert G.scan("Will Smith is here", ScanContext()).sanitized_text == "<PERSON> is here"
