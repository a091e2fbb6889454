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
])
def test_pii_found_and_redacted(text, entity):
    v = G.scan(text, ScanContext())
    assert v.action == "redact" and f"<{entity}>" in v.sanitized_text
    assert all(text[s.start:s.end] not in " ".join(v.reasons) for s in v.spans)


@pytest.mark.parametrize("text", ["How do I kill a Python process?", "What is 17 times 23?",
                                  "Email me the steps to reset a router."])
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
    with pytest.raises(ValueError, match="spacy_model"):
        PiiGuard(PiiConfig(spacy_model="en_core_web_nope"))
    with pytest.raises(ValueError, match="reversible"):
        PiiConfig(reversible=True, operator="mask")
