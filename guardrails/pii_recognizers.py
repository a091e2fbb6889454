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
- Cards: `card_matches` (Luhn, ISO/IEC 7812 groupings); `resolve_overlaps` lets a card, IBAN,
  IP, SSN or e-mail win over a phone or name overlapping it; `context_enhancer` is Presidio's
  context-word booster in linear time. Full list and figures: docs/pii.md.
- `keep_person` drops PERSON detections that are street names ("Nelson Mandela Drive"),
  companies ("Areavibes Inc") or software and company names listed in
  data/not_person.txt ("Ray Serve").
"""

from __future__ import annotations

import re
from functools import cache
from pathlib import Path

PHONE_HINT = re.compile(r"\d(?:[\s().\-/]{0,3}\d){6,}")
# A phone number has at most 15 digits (E.164) plus an extension: python-phonenumbers reads
# windows around runs of at most 20 digits, each window at most PHONE_WINDOW_MAX characters, so
# its cost stays linear however long a run of digits and separators an input holds.
# A run of more than 7 digit groups, or 16+ digits in one group, is no single number; and the
# windows read are at most one per PHONE_WINDOW_EVERY characters of text (past that, a text that
# is mostly digits, only the linear regexes below look for phones).
PHONE_CHUNK = re.compile(r"\d(?:[\s().\-/]{0,3}\d){6,19}")
PHONE_WINDOW_MAX = 160
PHONE_WINDOW_EVERY = 256
_DIGIT_GROUP = re.compile(r"\d+")
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
    return _near_words(text, start, end, PHONE_WORDS)


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


def phone_windows(text: str, context: int) -> list[tuple[int, int]]:
    """Windows of `context` characters either side of each digit run, merged while short."""
    out: list[list[int]] = []
    budget = 4 + len(text) // PHONE_WINDOW_EVERY
    for m in PHONE_CHUNK.finditer(text):
        groups = _DIGIT_GROUP.findall(m.group(0))
        if len(groups) > 7 or max(map(len, groups)) >= 16:
            continue
        s, e = max(0, m.start() - context), min(len(text), m.end() + context)
        if out and s <= out[-1][1] and e - out[-1][0] <= PHONE_WINDOW_MAX:
            out[-1][1] = e
        elif len(out) < budget:
            out.append([s, e])
    return [(s, e) for s, e in out]


# Card numbers (ISO/IEC 7812): 12-19 digits, Luhn check digit, major industry identifier 1-6,
# written contiguous or in groups of 3-6 (first group 4-6, last 1-6) split by one space or dash
# used throughout: 4-4-4-4, 4-6-5 (Amex), 4-6-4 (Diners), 4-4-4-4-3 (19 digits). A run glued to
# another alphanumeric group ("PL11 3015 7013 ...", an IBAN) is not a card.
CARD_RUN = re.compile(r"(?<![\w\-+])(?<!\d[ \-])\d{1,19}(?:[ \-]\d{1,19}){0,7}(?![\w\-+]|[ \-]\d)")
_CHAIN_BEFORE = re.compile(r"(?:[A-Za-z0-9]++[ \-])++$")
CARD_WORDS = {"card", "cards", "credit", "debit", "visa", "mastercard", "amex", "maestro", "cc",
              "discover", "jcb", "diners", "payment", "pay", "paid", "charge", "charged", "number",
              "no", "ending", "expiry", "cvv", "pan"}


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def card_matches(text: str) -> list[tuple[int, int, float]]:
    """(start, end, score) of card numbers; 12-14 digit ones only next to a card word."""
    out = []
    for m in CARD_RUN.finditer(text):
        run = m.group(0)
        seps = set(re.findall(r"[ \-]", run))
        groups = re.split(r"[ \-]", run)
        digits = "".join(groups)
        if (len(seps) > 1 or not 12 <= len(digits) <= 19 or digits[0] not in "123456"
                or not luhn_ok(digits)):
            continue
        if len(groups) > 1 and not (4 <= len(groups[0]) <= 6 and all(3 <= len(g) <= 6 for g in groups[1:-1])
                                    and 1 <= len(groups[-1]) <= 6):
            continue
        chain = _CHAIN_BEFORE.search(text, max(0, m.start() - 40), m.start())
        if chain and any(ch.isdigit() for ch in chain.group(0)):
            continue
        if len(digits) < 15 and not _near_words(text, *m.span(), CARD_WORDS, before=6, after=3):
            continue
        out.append((m.start(), m.end(), 1.0))
    return out


def _near_words(text: str, start: int, end: int, words: set[str], before: int = 4, after: int = 2) -> bool:
    near = WORD.findall(text[max(0, start - 60):start].lower())[-before:]
    near += WORD.findall(text[end:end + 30].lower())[:after]
    return any(w in words for w in near)


PARTICLES = {"van", "von", "der", "den", "de", "da", "das", "dos", "du", "di", "del", "della", "la",
             "le", "ter", "ten", "bin", "zu"}
_PARTICLE = r"(?:(?:van|von|der|den|de|da|das|dos|du|di|del|della|la|le|ter|ten|bin|zu)\s+){0,3}"
_NAME_WORD = r"[^\W\d_][\w'\-]*\.?"
RELATIONS = r"""husband|wife|partner|son|daughter|mother|mom|mum|father|dad|brother|sister|friend|
colleague|boss|manager|landlord|landlady|tenant|accountant|advisor|adviser|lawyer|neighbour|neighbor|
child|kid|uncle|aunt|cousin|grandmother|grandfather|grandma|grandpa|fiancée?|assistant|nephew|niece"""
NAME_CUE = re.compile(
    r"(?:\b(?:my name is|name's|i am|i'm|this is|call me|named|called)\s+|"
    r"\b(?:(?:first|last|middle|maiden|full|family|given|birth)\s+name|surname|forename)"
    r"(?:\s+(?:is|was))?\s*[:?\-]?\s+|\bname\s*[:=]\s*|"
    r"\b(?:my|our|your|his|her|their)\s+(?:" + RELATIONS.replace("\n", "") + r")\s+|"
    r"\b(?:dear|hi|hello|hey)\s+|"
    r"\b(?:ask|tell|remind|thank|invite|ping|cc|email|text|meet|met|told|asked|thanked|reminded|"
    r"invited|emailed|texted)\s+|"
    r"\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Madam|Mister)\.?\s+)"
    rf"({_PARTICLE}{_NAME_WORD}(?:\s+{_PARTICLE}{_NAME_WORD}){{0,2}})", re.IGNORECASE)
# Words a greeting or a relation word is followed by that are no name ("Dear Customer").
NOT_NAMES = set("""sir madam customer customers team all everyone everybody friend friends colleague
colleagues world support there folks guys user users client clients member members manager
sirs madams me us him them it this that these those yourself myself center centre service desk
address account bank god""".split())


def _name_words(words: list[str], openers: set[str]) -> int:
    """How many of `words` make a name: title-case words, particles between them."""
    n = k = 0
    while k < len(words):
        w = words[k]
        if w.lower() in PARTICLES and k + 1 < len(words):
            k += 1
            continue
        if not (w[0].isupper() and w.lower().strip(".") not in openers | NOT_NAMES
                and w.lower().strip(".") not in STREET_WORDS | ORG_WORDS):
            break
        k += 1
        n = k
    return n


def name_cue_matches(text: str, openers: set[str]) -> list[tuple[int, int]]:
    """Names after a cue, title-case words only ("I am Going" is no name)."""
    out = []
    for m in NAME_CUE.finditer(text):
        words = m.group(1).split()
        n = _name_words(words, openers)
        if n:
            out.append((m.start(1), m.start(1) + len(" ".join(words[:n]).rstrip("."))))
    return out


# "Anders Ahmed", "Leah van der Meulen": a census given name and a title-case surname.
GIVEN_SURNAME = re.compile(rf"(?<![\w\-])([A-Z][^\W\d_]+)[ \t]+({_PARTICLE}[A-Z][^\W\d_][\w'\-]*)")


# "Justin said ...": a census given name alone, before a verb of saying or doing.
GIVEN_VERB = re.compile(r"(?<![\w\-])([A-Z][a-z]+)(?=[ \t]+(?:said|says|asked|told|wrote|replied|"
                        r"wants|needs|paid|sent|called|thinks|lives|works|opened|forgot)\b)")


def given_name_matches(text: str, openers: set[str]) -> list[tuple[int, int]]:
    """"Anders Ahmed" (a census given name and a title-case surname) and "Justin said"."""
    out = []
    for m in GIVEN_SURNAME.finditer(text):
        last = m.group(2).split()[-1]
        if (m.group(1) in given_names() and _name_words([m.group(1), *m.group(2).split()], openers)
                == 1 + len(m.group(2).split()) and last not in COMMON_WORD_NAMES):
            out.append(m.span())
    out += [m.span() for m in GIVEN_VERB.finditer(text) if m.group(1) in given_names()]
    return out


_NEXT_NAME = re.compile(rf"(?:(?<=\b[A-Z])\.)?[ \t]+({_PARTICLE}[A-Z][^\W\d_][\w'\-]*)")
_PREV_NAME = re.compile(r"([A-Z][^\W\d_][\w'\-]*)[ \t]+$")


def extend_person(text: str, start: int, end: int, openers: set[str]) -> tuple[int, int]:
    """A PERSON span grown over the title-case words next to it ("Mario" + "Comeriato"): the
    NER model often tags a first or last name alone. A word before joins only when it cannot be
    the sentence's capitalised first word, or is a given name; an all-capitals word ("CEO")
    never joins."""
    for _ in range(3):
        m = _NEXT_NAME.match(text, end)
        if (not m or _name_words(m.group(1).split(), openers) != len(m.group(1).split())
                or m.group(1).isupper()):
            break
        end = m.end()
    for _ in range(2):
        m = _PREV_NAME.search(text, max(0, start - 40), start)
        if not m or _name_words([m.group(1)], openers) != 1 or m.group(1).isupper():
            break
        before = text[:m.start()].rstrip()
        if not (before and before[-1] not in ".!?:\n" or m.group(1) in given_names()):
            break
        start = m.start()
    return start, end


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
    if not words or any(ch.isdigit() for ch in text[start:end]):
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


# A detection of one of these (checksums or a strict shape) wins over a phone or a name overlapping it.
STRONG = {"CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS", "US_SSN", "EMAIL_ADDRESS"}


def resolve_overlaps(results: list) -> list:
    """Drop a phone or name detection that overlaps a STRONG one ("192.168.0.12" is no phone,
    "4508 6468 0095 8274 905" holds none), and one inside a longer one of its type."""
    import bisect

    merged: list[list[int]] = []  # STRONG spans, merged, for a binary search per detection
    for r in sorted((r for r in results if r.entity_type in STRONG), key=lambda r: r.start):
        if merged and r.start < merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], r.end)
        else:
            merged.append([r.start, r.end])
    starts = [m[0] for m in merged]

    def hits_strong(r):
        i = bisect.bisect_left(starts, r.end) - 1
        return i >= 0 and merged[i][1] > r.start

    results = [r for r in results if r.entity_type in STRONG or not hits_strong(r)]
    # a name inside a longer name ("Heuvel" in "Annemijn van den Heuvel") is the same detection
    out, reach = [], {}
    for r in sorted(results, key=lambda r: (r.entity_type, r.start, -r.end)):
        end, span = reach.get(r.entity_type, (-1, None))
        if end >= r.end and span != (r.start, r.end):
            continue
        if r.end > end:
            reach[r.entity_type] = (r.end, (r.start, r.end))
        out.append(r)
    return out


#: Tokens either side of a detection in which Presidio's context words are looked for.
CONTEXT_TOKENS = 40


def context_enhancer():
    """Presidio's LemmaContextAwareEnhancer, in linear time: it finds a detection's token by a
    scan from the text's start and walks the whole text for context words, so its cost grows
    with detections x tokens (58 s for 8 KB of "1.1.1."). Here: a binary search, and at most
    CONTEXT_TOKENS tokens either side."""
    import bisect

    from presidio_analyzer.context_aware_enhancers import LemmaContextAwareEnhancer

    class BoundedContextEnhancer(LemmaContextAwareEnhancer):
        def _extract_surrounding_words(self, nlp_artifacts, word, start):
            if not nlp_artifacts.tokens:
                return [""]
            cache = getattr(nlp_artifacts, "_bounded", None)
            if cache is None:
                words = [t.text for t in nlp_artifacts.tokens] if "words" not in nlp_artifacts.tokens.user_data \
                    else nlp_artifacts.tokens.user_data["words"]
                ends = [i + len(w) for i, w in zip(nlp_artifacts.tokens_indices, words, strict=True)]
                cache = nlp_artifacts._bounded = (ends, set(nlp_artifacts.keywords))
            ends, keywords = cache
            i = min(bisect.bisect_right(ends, start), len(ends) - 1)
            lemmas = nlp_artifacts.lemmas

            def near(indices, n):
                out = []
                for j in indices:
                    if lemmas[j].lower() in keywords:
                        out.append(lemmas[j].lower())
                        if len(out) > n:
                            break
                return out

            back = near(range(i, max(-1, i - CONTEXT_TOKENS), -1), self.context_prefix_count)
            fwd = near(range(i, min(len(lemmas), i + CONTEXT_TOKENS)), self.context_suffix_count)
            return list(set(back + fwd))

    return BoundedContextEnhancer()
