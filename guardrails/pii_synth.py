"""Labelled synthetic PII sentences in presidio-research's template style, filled by Faker.

    .venv/bin/python -m guardrails.pii_synth --n 5 --seed 7 --templates heldout

Needs `faker` (the `test` extra). A template is a sentence with `{{placeholder}}`s; each is
filled by Faker in a locale drawn per sentence, and the filled span is recorded as
`{"entity_type", "entity_value", "start_position", "end_position"}` in rows shaped like
presidio-research's generated files (`full_text`, `masked`, `spans`, `template_id`).

Two template sets that share no sentence: `tuning` (recognisers were tuned while looking at
its errors) and `heldout` (written at the same time, its errors never looked at while
tuning), so a figure on `heldout` with a new seed is held-out. Values follow what people
type: national and international (E.164/ITU) phone formats of the locale, cards of every
Faker brand with no, space or dash grouping, IBANs compact or in groups of four.
"""

from __future__ import annotations

import argparse
import json
import random
import re

LOCALES = ["en_US", "en_GB", "en_CA", "en_AU", "en_IN", "de_DE", "fr_FR", "es_ES", "it_IT",
           "nl_NL", "pl_PL", "pt_BR", "sv_SE"]
# phonenumbers region of each locale, to re-format the locale's number the ITU way
REGION = {"en_US": "US", "en_GB": "GB", "en_CA": "CA", "en_AU": "AU", "en_IN": "IN", "de_DE": "DE",
          "fr_FR": "FR", "es_ES": "ES", "it_IT": "IT", "nl_NL": "NL", "pl_PL": "PL", "pt_BR": "BR",
          "sv_SE": "SE"}
CARD_TYPES = ["amex", "diners", "discover", "jcb15", "jcb16", "maestro", "mastercard", "visa13",
              "visa16", "visa19"]
ENTITY = {"name": "PERSON", "first_name": "PERSON", "last_name": "PERSON",
          "phone_number": "PHONE_NUMBER", "credit_card_number": "CREDIT_CARD",
          "email": "EMAIL_ADDRESS", "iban": "IBAN_CODE", "ssn": "US_SSN", "ip_address": "IP_ADDRESS"}

TEMPLATES = {
    "tuning": """\
My name is {{name}} and my card {{credit_card_number}} was declined yesterday.
Please call me back on {{phone_number}}, I am available after 5pm.
Hi, this is {{name}}. I can't log in from {{ip_address}} since this morning.
Can you move 200 EUR from {{iban}} to my savings account?
The card ending in {{credit_card_number}} belongs to my husband {{first_name}}.
Send the statement to {{email}} and text me on {{phone_number}} when it is done.
{{name}} opened the account, his SSN is {{ssn}}.
I lost my wallet with card {{credit_card_number}}, please block it now!
Our landlord {{name}} wants the rent paid into IBAN {{iban}} by Friday.
Could you update my phone number to {{phone_number}}?
Bot: What's the name on the account? User: {{name}}
User: my iban is {{iban}} and my name is {{name}}
{{first_name}} said the transfer to {{iban}} never arrived.
The login attempts came from {{ip_address}} and {{ip_address}}.
Dear {{name}}, we could not reach you at {{phone_number}}.
please add my daughter {{first_name}} {{last_name}} as a second card holder
Her social security number is {{ssn}} and she lives abroad.
Mr. {{last_name}} asked us to refund card {{credit_card_number}}.
My email changed, it is now {{email}}.
You can wire the deposit to {{iban}} (account holder {{name}}).
Is {{credit_card_number}} a valid card number for online payments?
I talked to {{name}} at the branch and she gave me {{phone_number}} as a contact.
Reset my password and send the link to {{email}} please.
Why was {{ip_address}} blocked from the online banking site?
{{name}} and {{name}} share the joint account.
My phone {{phone_number}} was stolen, so do not send codes there.
The beneficiary is {{name}}, IBAN {{iban}}, reference invoice 2291.
Charge the booking to {{credit_card_number}}, expiry 09/27.
SSN: {{ssn}}, name: {{name}}, phone: {{phone_number}}
Ask {{first_name}} to forward the receipt to {{email}}.
""",
    "heldout": """\
I'm {{name}}, could someone explain the fee on my card {{credit_card_number}}?
Ring me at {{phone_number}} if anything looks odd.
Funds should go to {{iban}} which is held by {{name}}.
We saw a sign-in from {{ip_address}} that you might not recognise.
Kindly note my new contact number {{phone_number}} and email {{email}}.
The dispute concerns card {{credit_card_number}}; the holder is {{name}}.
{{first_name}} needs a replacement card, the old one was {{credit_card_number}}.
Here is my SSN {{ssn}} for the tax form.
Our accountant {{name}} will send the invoices from {{email}}.
Can I pay my loan from {{iban}} every month?
The server {{ip_address}} keeps timing out on the payments page.
Hello {{first_name}}, your advisor {{name}} will phone you on {{phone_number}}.
Please don't share {{credit_card_number}} with anyone, said {{name}}.
Transfer the refund to IBAN {{iban}} and confirm to {{email}}.
My mother {{name}} forgot her PIN; her mobile is {{phone_number}}.
Block {{credit_card_number}} immediately, it was skimmed at an ATM.
Is it safe to give my social security number {{ssn}} over chat?
I met {{name}} at the conference and we exchanged numbers: {{phone_number}}.
The salary of {{first_name}} {{last_name}} arrives on {{iban}}.
Could you whitelist {{ip_address}} for our office?
Ms. {{last_name}} has asked to close the account linked to {{email}}.
Write to {{email}} or call {{phone_number}} for the paperwork.
{{name}} paid with {{credit_card_number}} but the order shows unpaid.
""",
}
PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


def _group(digits: str, sizes: list[int], sep: str) -> str:
    out, i = [], 0
    for n in sizes:
        out.append(digits[i:i + n])
        i += n
    if i < len(digits):
        out.append(digits[i:])
    return sep.join(p for p in out if p)


def card_number(fake, rng: random.Random) -> str:
    digits = fake.credit_card_number(rng.choice(CARD_TYPES))
    sep = rng.choice(["", " ", "-"])
    if not sep:
        return digits
    if len(digits) == 15:
        return _group(digits, [4, 6, 5], sep)   # Amex/15-digit JCB as printed
    if len(digits) == 14:
        return _group(digits, [4, 6, 4], sep)   # Diners Club
    return _group(digits, [4] * 4, sep)


def phone_number(fake, locale: str, rng: random.Random) -> str:
    import phonenumbers

    raw = fake.phone_number()
    if rng.random() < 0.4:  # the same number written the ITU way, where it parses
        try:
            num = phonenumbers.parse(raw, REGION[locale])
            fmt = rng.choice([phonenumbers.PhoneNumberFormat.E164,
                              phonenumbers.PhoneNumberFormat.INTERNATIONAL])
            if phonenumbers.is_possible_number(num) and not num.extension:
                return phonenumbers.format_number(num, fmt)
        except phonenumbers.NumberParseException:
            pass
    return raw


def iban(fake, locale: str, rng: random.Random) -> str:
    # Faker gives locales without their own bank provider (en_US, en_IN, sv_SE ...) GB IBANs of
    # the wrong length: draw those from a locale whose IBANs are real.
    if locale not in IBAN_LOCALES:
        fake = _faker(rng.choice(sorted(IBAN_LOCALES)), fake)
    value = fake.iban()
    return _group(value, [4] * 8, " ") if rng.random() < 0.5 else value


def value(kind: str, fake, locale: str, rng: random.Random) -> str:
    if kind == "name":
        return f"{fake.first_name()} {fake.last_name()}"
    if kind == "first_name":
        return fake.first_name()
    if kind == "last_name":
        return fake.last_name()
    if kind == "phone_number":
        return phone_number(fake, locale, rng)
    if kind == "credit_card_number":
        return card_number(fake, rng)
    if kind == "email":
        return rng.choice([fake.email, fake.free_email, fake.company_email])()
    if kind == "iban":
        return iban(fake, locale, rng)
    if kind == "ssn":
        return (fake if locale == "en_US" else _faker("en_US", fake)).ssn()
    if kind == "ip_address":
        return fake.ipv4_public() if rng.random() < 0.8 else fake.ipv6()
    raise ValueError(f"template placeholder {{{{{kind}}}}} is not one of {sorted(ENTITY)}")


IBAN_LOCALES = {"en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pl_PL", "pt_BR"}


def _faker(locale: str, fake):
    """A Faker for `locale` seeded from `fake`, so a row set stays deterministic for a seed."""
    from faker import Faker

    others = fake.__dict__.setdefault("_d2d_others", {})
    if locale not in others:
        others[locale] = Faker(locale)
        others[locale].seed_instance(fake.random.getrandbits(32))
    return others[locale]


def fill(template: str, template_id: int, fake, locale: str, rng: random.Random) -> dict:
    text, spans, pos = [], [], 0
    for m in PLACEHOLDER.finditer(template):
        text.append(template[pos:m.start()])
        start = sum(map(len, text))
        v = value(m.group(1), fake, locale, rng)
        text.append(v)
        spans.append({"entity_type": ENTITY[m.group(1)], "entity_value": v,
                      "start_position": start, "end_position": start + len(v)})
        pos = m.end()
    text.append(template[pos:])
    return {"full_text": "".join(text), "masked": template, "spans": spans,
            "template_id": template_id, "metadata": {"locale": locale}}


def generate(n: int, seed: int, templates: str = "tuning") -> list[dict]:
    """`n` labelled sentences from the `templates` set, deterministic for a seed."""
    from faker import Faker

    if templates not in TEMPLATES:
        raise ValueError(f"templates: {templates!r} is not one of {sorted(TEMPLATES)}")
    if n < 0:
        raise ValueError("n: must be >= 0")
    rng = random.Random(seed)
    fakers = {}
    lines = TEMPLATES[templates].strip().splitlines()
    rows = []
    for _ in range(n):
        locale = rng.choice(LOCALES)
        if locale not in fakers:
            fakers[locale] = Faker(locale)
            fakers[locale].seed_instance(rng.getrandbits(32))
        tid = rng.randrange(len(lines))
        rows.append(fill(lines[tid], tid, fakers[locale], locale, rng))
    return rows


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--templates", default="tuning", choices=sorted(TEMPLATES))
    p.add_argument("--out", help="write a JSON list here instead of printing JSON lines")
    a = p.parse_args(argv)
    rows = generate(a.n, a.seed, a.templates)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(rows, f, ensure_ascii=False, indent=1)
        print(f"wrote {len(rows)} rows to {a.out}")
    else:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))


if __name__ == "__main__":
    main()
