"""Presidio loads once for the module (seconds); each case is a few ms."""

import re

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


@pytest.mark.parametrize("text, entity, value", [
    ("refund card 4031-1850-9690-2218-540 please", "CREDIT_CARD", "4031-1850-9690-2218-540"),  # 19 digits
    ("my Mastercard 2223 0031 2200 3222 was declined", "CREDIT_CARD", "2223 0031 2200 3222"),  # 2-series
    ("Amex 3782 822463 10005 expires soon", "CREDIT_CARD", "3782 822463 10005"),             # 4-6-5
    ("Please wire it to DE89370400440532013000 by Monday.", "IBAN_CODE", "DE89370400440532013000"),
    ("Text me on +33 6 12 34 56 78 tonight", "PHONE_NUMBER", "+33 6 12 34 56 78"),
    ("The beneficiary is Leah van der Meulen, reference 2291.", "PERSON", "Leah van der Meulen"),
])
def test_structured_formats_and_whole_names(text, entity, value):
    v = G.scan(text, ScanContext())
    assert any(s.label == entity and text[s.start:s.end] == value for s in v.spans), v.spans


def test_no_cross_type_or_partial_detections():
    iban = "PL11 3015 7013 6840 3820 4403 9404"       # digit groups inside an IBAN are no card
    v = G.scan(f"Move it from {iban} to savings", ScanContext())
    assert [s.label for s in v.spans] == ["IBAN_CODE"]
    v = G.scan("The login came from 201.201.31.79 at night", ScanContext())
    assert [s.label for s in v.spans] == ["IP_ADDRESS"]       # an IPv4 address is no phone
    assert G.scan("Our CEO Amy Williams spoke", ScanContext()).sanitized_text == "Our CEO <PERSON> spoke"
    assert G.scan("Charge it, expiry 09/27.", ScanContext()).action == "allow"


def _unbounded_inside_unbounded(parsed, outer=False) -> bool:
    import re._constants as c

    for op, av in parsed:
        if op in (c.MAX_REPEAT, c.MIN_REPEAT):
            unbounded = av[1] == c.MAXREPEAT
            if (unbounded and outer) or _unbounded_inside_unbounded(av[2], outer or unbounded):
                return True
        elif op in (c.SUBPATTERN, c.ATOMIC_GROUP):
            if _unbounded_inside_unbounded(av[-1], outer):
                return True
        elif op == c.BRANCH and any(_unbounded_inside_unbounded(b, outer) for b in av[1]):
            return True
    return False


def test_recogniser_regexes_have_no_nested_unbounded_repeats():
    """Catastrophic backtracking needs a repeat inside a repeat; ours bound one of the two
    (costs on adversarial 32 KB inputs: guardrails.pii_eval.scaling)."""
    import re._parser as sre_parse

    import guardrails.pii as pii
    import guardrails.pii_recognizers as rec

    patterns = [v for m in (pii, rec) for v in vars(m).values() if isinstance(v, re.Pattern)]
    assert len(patterns) > 10
    nested = [p.pattern for p in patterns
              if p.pattern.count("|") < 200 and _unbounded_inside_unbounded(sre_parse.parse(p.pattern, p.flags))]
    assert nested == []


def test_eval_scores_spans_by_iou_and_generator_labels_line_up():
    from guardrails.pii_eval import guard_predict, score
    from guardrails.pii_synth import generate

    rows = [{"full_text": "ask Karen Garner now", "spans": [
        {"entity_type": "PERSON", "start_position": 4, "end_position": 9},
        {"entity_type": "PERSON", "start_position": 10, "end_position": 16}]}]
    assert score(rows, lambda t: [("PERSON", 4, 16)], ["PERSON"])["names"]["recall"] == 1.0
    assert score(rows, lambda t: [("PERSON", 4, 6)], ["PERSON"])["names"]["fp"] == 1
    synth = generate(80, seed=11, templates="tuning")
    assert synth == generate(80, seed=11, templates="tuning")
    assert all(r["full_text"][s["start_position"]:s["end_position"]] == s["entity_value"]
               for r in synth for s in r["spans"])
    predict, cfg = guard_predict()
    m = score(synth, predict, cfg.entities)
    assert m["structured"]["recall"] >= 0.9 and m["overall"]["precision"] >= 0.9
