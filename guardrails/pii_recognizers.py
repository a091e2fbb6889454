"""Our additions to Presidio's recognizers for the PII guard: phone formats, name cues, and
the rules that keep PERSON honest.

    .venv/bin/python -c "from guardrails.pii_recognizers import phone_matches; print(phone_matches('call me on 21 212 133 2727'))"

- Phones: Presidio's `PhoneRecognizer` (python-phonenumbers, eight regions) costs ~6 ms
  per KB, so it runs only when the text has a run of 7+ digits (`PHONE_HINT`).
  `phone_matches` adds the formats it rejects: North American numbers with a `+1`/`001`
  prefix or an extension on an unassigned area code, `+`/`00` international numbers,
  and digit groups ("69 987 88 37"), the last only next to a phone word ("call", "fax").
- Names: `NAME_CUE` catches names after "my name is", "Mr.", "maiden name is" ...
  `person_label` turns a spaCy ORG/PRODUCT/WORK_OF_ART entity of 2-3 title-case words
  that starts with a given name (US census list from the `names` package) into PERSON:
  the small English model often calls unfamiliar full names ORG.
- `keep_person` drops PERSON detections that are street names ("Nelson Mandela Drive"),
  companies ("Areavibes Inc") or software and company names listed in
  data/not_person.txt ("Ray Serve").
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

PHONE_HINT = re.compile(r"\d(?:[\s().\-/]{0,3}\d){6,}")
_SEP = r"[\s.\-]"
NANP = re.compile(
    rf"(?<![\w+])(?:(?:\+|00)?1{_SEP}?|001{_SEP}?)?(?:\(\d{{3}}\)\s?|\d{{3}}{_SEP})\d{{3}}{_SEP}\d{{4}}"
    r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?(?!\w)", re.IGNORECASE)
INTERNATIONAL = re.compile(
    rf"(?<![\w+])(?:\+|00)[1-9]\d{{0,2}}{_SEP}?(?:\(\d{{1,4}}\){_SEP}?)?\d{{1,4}}(?:{_SEP}?\d{{2,4}}){{1,4}}"
    r"(?:\s?(?:x|ext\.?)\s?\d{1,6})?(?!\w)", re.IGNORECASE)
GROUPED = re.compile(rf"(?<![\w+.,/\-])\(?\d{{2,4}}\)?(?:{_SEP}\d{{2,4}}){{2,5}}(?![\w]|[.,/\-]\d)")
EXTENSION = re.compile(r"\s?(?:x|ext)", re.IGNORECASE)
SSN_SHAPE = re.compile(r"\d{3}-\d{2}-\d{4}")
PHONE_WORDS = {"phone", "telephone", "tel", "cell", "cellphone", "mobile", "call", "fax", "office",
               "desk", "landline", "whatsapp", "sms", "text", "reach", "dial", "ring", "contact",
               "ph", "hotline", "number", "home", "work"}
WORD = re.compile(r"[a-z]+")


def _digits(s: str) -> int:
    return sum(ch.isdigit() for ch in s)


def _near_phone_word(text: str, start: int, end: int) -> bool:
    before = WORD.findall(text[max(0, start - 40):start].lower())[-4:]
    after = WORD.findall(text[end:end + 20].lower())[:2]
    return any(w in PHONE_WORDS for w in before + after)


def phone_matches(text: str) -> list[tuple[int, int, float]]:
    """(start, end, score) of phone numbers in formats python-phonenumbers does not accept."""
    out = []
    for pattern, score in ((NANP, 0.5), (INTERNATIONAL, 0.5)):
        out += [(m.start(), m.end(), score) for m in pattern.finditer(text)
                if 8 <= _digits(EXTENSION.split(m.group(0))[0]) <= 15]
    for m in GROUPED.finditer(text):
        s = m.group(0)
        if 8 <= _digits(s) <= 15 and not SSN_SHAPE.fullmatch(s) and _near_phone_word(text, *m.span()):
            out.append((m.start(), m.end(), 0.6))
    return out


NAME_CUE = re.compile(
    r"(?:\b(?:my name is|name's|i am|i'm|this is|call me|named|called)\s+|"
    r"\b(?:(?:first|last|middle|maiden|full|family|given|birth)\s+name|surname|forename)"
    r"(?:\s+(?:is|was))?\s*[:?\-]?\s+|"
    r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mister)\.?\s+)"
    r"((?:[A-Z][\w'\-]+)(?:\s+[A-Z][\w'\-]+){0,2})", re.IGNORECASE)


def name_cue_matches(text: str, openers: set[str]) -> list[tuple[int, int]]:
    """Names after a cue, title-case words only ("I am Going" is no name)."""
    out = []
    for m in NAME_CUE.finditer(text):
        words = m.group(1).split()
        n = 0
        while n < len(words) and words[n][0].isupper() and words[n].lower() not in openers:
            n += 1
        if n:
            out.append((m.start(1), m.start(1) + len(" ".join(words[:n]))))
    return out


@cache
def census_given_names() -> frozenset[str]:
    """Given names from the US census 1990 lists shipped in the `names` package (5,494)."""
    import names

    folder = Path(names.__file__).parent
    out = set()
    for f in ("dist.male.first", "dist.female.first"):
        out |= {line.split()[0].title() for line in (folder / f).read_text().splitlines() if line.strip()}
    return frozenset(out)


@cache
def given_names() -> frozenset[str]:
    """Census given names less the ordinary words, months and places ("Grace Church" stays ORG)."""
    return census_given_names() - COMMON_WORD_NAMES


COMMON_WORD_NAMES = set("""Will May June April August Grace Hope Joy Faith Rose Ray Mark Bill Art
Sky Summer Autumn Dawn Eve Iris Lily Ruby Jade Amber Crystal Pearl Ivy Holly Daisy Violet Sandy
Frank Max Chase Hunter Miles Lane Wade Guy Rich Sterling Page Paris Austin Dallas Jordan Georgia
Carolina Virginia Florence Chelsea Sydney Victoria Charlotte Madison Savannah Brittany China India
Asia Africa America Rock Stone Wood Forest River Lake Cliff Glen Dale Heath Penny Bob Jack Pat Sue
Don Gay Harmony Melody Destiny Star Sunny Honey Candy Cherry Ginger Misty Windy Storm Rain Young
Long Royal Prince King Major Angel Christian Norman Gene Van Carter Mason Taylor Cook Baker""".split())

_ENTITY_LIKE_PERSON = {"ORG", "PRODUCT", "WORK_OF_ART"}
_TITLE_WORD = re.compile(r"[A-Z][\w'\-]*")


def person_label(label: str, words: list[str], openers: set[str]) -> tuple[str, int]:
    """spaCy's label, or PERSON for an ORG-like "Megan Payne" that starts with a given name;
    and how many leading words to drop ("Meet Megan Payne": the sentence's verb)."""
    skip = 0
    while (skip < len(words) - 1 and words[skip].lower() in openers
           and words[skip].title() not in census_given_names()):
        skip += 1
    name = words[skip:]
    if label == "PERSON":
        return label, skip
    if (label in _ENTITY_LIKE_PERSON and 2 <= len(name) <= 3
            and all(_TITLE_WORD.fullmatch(w) for w in name) and name[0] in given_names()
            and not any(w.lower().strip(".") in ORG_WORDS | STREET_WORDS for w in name)):
        return "PERSON", skip
    return label, 0


STREET_WORDS = set("""st street rd road ave avenue drive lane ln blvd boulevard way court ct place pl
square sq terrace highway hwy parkway pkwy crescent close gardens row alley straat strasse straße
weg gasse gürtel allee platz rue via calle avenida rua strada piazza viale chemin quai plaza ulica
utca útja vej gatan gata veien""".split())
STREET_PREFIXES = set("rue via calle avenida rua strada piazza viale chemin quai plaza ulica".split())
ORG_WORDS = set("""inc ltd llc plc gmbh corp corporation co company group bank ag sa bv nv oy ab
limited holdings partners""".split())


@cache
def not_person_terms() -> re.Pattern:
    lines = (Path(__file__).with_name("data") / "not_person.txt").read_text(encoding="utf-8").splitlines()
    terms = sorted({t.strip() for t in lines if t.strip() and not t.startswith("#")}, key=len, reverse=True)
    return re.compile(r"(?<![\w\-])(?:" + "|".join(re.escape(t) for t in terms) + r")(?![\w\-])")


def keep_person(text: str, start: int, end: int, openers: set[str]) -> bool:
    """False for a PERSON span that is a street, a company or a listed product name."""
    words = text[start:end].split()
    if not words:
        return False
    low = [w.lower().strip(".,") for w in words]
    nxt = re.match(r"[ \t]+([A-Z][\w]*\.?)", text[end:end + 20])
    if (low[0] in STREET_PREFIXES or any(w in STREET_WORDS | ORG_WORDS for w in low[1:])
            or (len(low) == 1 and low[0] in STREET_WORDS)
            or (nxt and nxt.group(1).lower().strip(".") in STREET_WORDS | ORG_WORDS)):
        return False
    rest = text[start:end]
    hit = False
    for m in not_person_terms().finditer(text, max(0, start - 40), min(len(text), end + 40)):
        if m.start() < end and start < m.end():
            hit = True
            a, b = max(m.start(), start) - start, min(m.end(), end) - start
            rest = rest[:a] + " " * (b - a) + rest[b:]
    # "Henry Ford" keeps its span; "Use Ray Tune" and "Ray Serve" leave no name behind.
    return not hit or any(_TITLE_WORD.fullmatch(w) and w.lower() not in openers for w in rest.split())
