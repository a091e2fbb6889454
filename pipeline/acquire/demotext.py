"""Plausible prose from templates and vocabulary: English articles on varied topics, short
German, French, Spanish and Chinese texts, and SEO spam, all deterministic given a `random.Random`.

    .venv/bin/python -c "import random; from pipeline.acquire.demotext import english_article; \
print(english_article(random.Random(0))[1][0])"

The English is written to pass the usual web-text quality filters (Gopher, C4,
FineWeb): many templates, each used at most once per article so n-grams rarely
repeat, full sentences ending in punctuation, ordinary stop words, no bullets.
"""

from __future__ import annotations

import random
import re

_A_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")

TOPICS: dict[str, dict[str, list[str]]] = {
    "gardening": {
        "nouns": ["tomato plants", "raised beds", "compost", "seedlings", "the soil", "mulch", "perennials",
                  "the vegetable patch", "rainwater", "pollinators", "fruit trees", "herbs"],
        "verbs": ["grow", "water", "prune", "protect", "feed", "plant out", "harvest", "cover"],
        "adjs": ["healthy", "sandy", "sheltered", "hardy", "fertile", "shady", "young", "late"],
        "people": ["gardeners", "growers", "allotment holders", "beginners"],
    },
    "astronomy": {
        "nouns": ["the night sky", "distant galaxies", "the telescope", "a comet", "the Moon", "Jupiter",
                  "the Milky Way", "star clusters", "an eclipse", "the observatory", "meteor showers", "Saturn"],
        "verbs": ["observe", "photograph", "track", "measure", "study", "locate", "record", "map"],
        "adjs": ["faint", "bright", "distant", "clear", "ancient", "dark", "visible", "rare"],
        "people": ["astronomers", "stargazers", "observers", "researchers"],
    },
    "cooking": {
        "nouns": ["the sauce", "fresh bread", "the oven", "a pinch of salt", "olive oil", "the dough", "garlic",
                  "a cast iron pan", "the stock", "roasted vegetables", "the recipe", "lemon zest"],
        "verbs": ["simmer", "bake", "season", "stir", "taste", "knead", "roast", "prepare"],
        "adjs": ["crisp", "tender", "simple", "rich", "warm", "golden", "fragrant", "light"],
        "people": ["home cooks", "chefs", "bakers", "families"],
    },
    "history": {
        "nouns": ["the old harbour", "medieval towns", "the archive", "trade routes", "the castle", "old maps",
                  "the treaty", "local records", "the cathedral", "the railway", "the market square", "letters"],
        "verbs": ["describe", "preserve", "examine", "rebuild", "document", "explain", "uncover", "compare"],
        "adjs": ["forgotten", "early", "remarkable", "local", "crowded", "wealthy", "quiet", "famous"],
        "people": ["historians", "archivists", "merchants", "villagers"],
    },
    "cycling": {
        "nouns": ["the chain", "mountain trails", "the saddle", "a steep climb", "tyre pressure", "the gears",
                  "long rides", "the brakes", "city lanes", "a rain jacket", "the route", "spare tubes"],
        "verbs": ["adjust", "ride", "check", "clean", "plan", "repair", "carry", "replace"],
        "adjs": ["smooth", "steep", "muddy", "reliable", "narrow", "short", "heavy", "quick"],
        "people": ["cyclists", "commuters", "riders", "mechanics"],
    },
    "software": {
        "nouns": ["the test suite", "a small library", "the database", "error messages", "the build", "logs",
                  "the interface", "old code", "the release", "documentation", "the server", "a code review"],
        "verbs": ["refactor", "deploy", "debug", "measure", "review", "simplify", "test", "document"],
        "adjs": ["slow", "readable", "stable", "fragile", "small", "careful", "useful", "clear"],
        "people": ["developers", "engineers", "maintainers", "new contributors"],
    },
    "health": {
        "nouns": ["a short walk", "sleep", "fresh vegetables", "regular exercise", "water", "breakfast",
                  "stress", "the daily routine", "a balanced diet", "stretching", "rest days", "good posture"],
        "verbs": ["improve", "support", "build", "reduce", "maintain", "plan", "track", "encourage"],
        "adjs": ["steady", "gentle", "regular", "moderate", "daily", "simple", "better", "lasting"],
        "people": ["doctors", "patients", "coaches", "older adults"],
    },
    "travel": {
        "nouns": ["the night train", "a small hotel", "the coastline", "local markets", "the old town",
                  "a walking tour", "the museum", "mountain villages", "the ferry", "street food", "a map", "the bus"],
        "verbs": ["visit", "explore", "book", "discover", "enjoy", "reach", "cross", "recommend"],
        "adjs": ["quiet", "crowded", "scenic", "affordable", "historic", "remote", "busy", "charming"],
        "people": ["travellers", "tourists", "locals", "guides"],
    },
}

_TEMPLATES = [
    "Most {people} agree that {noun} matters more than it first appears.",
    "If you want to {verb} {noun}, start early and keep notes as you go.",
    "In our experience, {adj} conditions make it much easier to {verb} {noun2}.",
    "There is no single right way to {verb} {noun}, but a few habits help.",
    "Many {people} forget that {noun2} can change quickly over a single season.",
    "The first thing to check is whether {noun} is {adj} enough for the job.",
    "When the weather turns, {people} often {verb} {noun} a little more carefully.",
    "A {adj} approach usually works better than an expensive one.",
    "It took us several weeks to understand why {noun} behaved the way it did.",
    "We asked a few {people} what they would do differently, and their answers were similar.",
    "Some of the best advice we received was to {verb} {noun2} before anything else.",
    "You do not need special equipment to {verb} {noun}; patience is more important.",
    "This is why {people} who {verb} {noun} regularly tend to see better results.",
    "On a {adj} morning, {noun} can look completely different from the day before.",
    "The difference between {noun} and {noun2} is easy to miss at first.",
    "After a while, you begin to notice small details that most people overlook.",
    "Keep in mind that {noun2} will not stay {adj} for very long.",
    "Experienced {people} often say that the hardest part is simply getting started.",
    "It is worth spending an extra hour to {verb} {noun} properly.",
    "We found that {noun} needed far less attention than we had expected.",
    "Nobody enjoys mistakes, but they teach you how {noun2} really works.",
    "By the end of the month, {noun} had become a normal part of our week.",
    "Ask around, and you will hear many different opinions about {noun}.",
    "The simplest rule is to {verb} {noun} only when it is really needed.",
    "Over the years, {people} have developed clever ways to {verb} {noun2}.",
    "Should you {verb} {noun} every day? The honest answer is that it depends.",
    "A friend of ours once tried to {verb} {noun} in a single afternoon, and it did not go well.",
    "Once you understand {noun}, the rest of the process becomes much clearer.",
    "Reading about {noun2} is useful, but practice teaches you far more.",
    "For a {adj} result, give yourself more time than you think you need.",
    "Local {people} were happy to share what had worked for them.",
    "What surprised us most was how {adj} {noun} remained through the whole year.",
    "There are good reasons to {verb} {noun2} slowly rather than all at once.",
    "We will return to this question in a later article, because it deserves more space.",
    "In short, {noun} rewards those who are willing to learn from each attempt.",
    "Try to {verb} {noun} at the same time each week so that it becomes a habit.",
    "Several readers wrote to us about {noun2}, and their letters were full of good ideas.",
    "If something goes wrong, it is usually because {noun} was rushed.",
    "The {adj} months are the best time to {verb} {noun}, according to most {people}.",
    "That said, every situation is different, and you should trust your own judgement.",
]

_TITLES = ["A Practical Guide to {Noun}", "What We Learned About {Noun}", "Why {Noun} Matters",
           "{Noun}: Common Mistakes and How to Avoid Them", "Notes on {Noun} for Beginners",
           "How {People} Think About {Noun}", "Ten Years of {Noun}", "Getting Started with {Noun}"]


def _fill(template: str, rng: random.Random, v: dict[str, list[str]]) -> str:
    noun, noun2 = rng.sample(v["nouns"], 2)
    s = template.format(noun=noun, noun2=noun2, verb=rng.choice(v["verbs"]), adj=rng.choice(v["adjs"]),
                        people=rng.choice(v["people"]))
    s = _A_VOWEL.sub(lambda m: m.group(1) + "n ", s)
    return s[0].upper() + s[1:]


def english_article(rng: random.Random, topic: str | None = None, paragraphs: int | None = None
                    ) -> tuple[str, list[str], str]:
    """(title, paragraphs, topic): 4-7 paragraphs of 3-5 sentences, no template used twice."""
    topic = topic or rng.choice(sorted(TOPICS))
    v = TOPICS[topic]
    n = paragraphs or rng.randint(4, 7)
    templates = rng.sample(_TEMPLATES, len(_TEMPLATES))
    paras, i = [], 0
    for _ in range(n):
        k = rng.randint(3, 5)
        paras.append(" ".join(_fill(t, rng, v) for t in templates[i: i + k]))
        i = (i + k) % (len(_TEMPLATES) - 5)
    noun = rng.choice(v["nouns"]).removeprefix("the ").removeprefix("a ").removeprefix("an ")
    title = rng.choice(_TITLES).format(Noun=noun.title(), People=rng.choice(v["people"]).title())
    return title, paras, topic


_FOREIGN = {
    "de": (["Die Stadt", "Der Garten", "Das Museum", "Die Regierung", "Der Verein", "Die Schule", "Das Wetter",
            "Die Bahn"],
           ["ist in diesem Jahr besonders schön", "hat neue Pläne für den Sommer vorgestellt",
            "wird am Wochenende für Besucher geöffnet", "bleibt trotz der Kritik bei ihrer Entscheidung",
            "sucht noch freiwillige Helfer aus der Umgebung", "war gestern das wichtigste Thema im Rathaus",
            "hat sich in den letzten Jahren stark verändert", "bietet jeden Montag kostenlose Führungen an"],
           ["Viele Bürger sind damit zufrieden.", "Das zeigt eine aktuelle Umfrage.",
            "Weitere Informationen folgen in der nächsten Woche.", "Die Kosten sind allerdings noch unklar.",
            "Kritiker sehen das anders."]),
    "fr": (["La ville", "Le jardin", "Le musée", "Le gouvernement", "L'association", "L'école", "La météo",
            "Le marché"],
           ["est particulièrement agréable cette année", "a présenté de nouveaux projets pour l'été",
            "sera ouvert aux visiteurs ce week-end", "maintient sa décision malgré les critiques",
            "cherche encore des bénévoles dans la région", "était hier le sujet principal à la mairie",
            "a beaucoup changé ces dernières années", "propose des visites gratuites chaque lundi"],
           ["Beaucoup d'habitants sont satisfaits.", "C'est ce que montre un sondage récent.",
            "Plus d'informations suivront la semaine prochaine.", "Les coûts restent cependant incertains.",
            "Les critiques ne sont pas du même avis."]),
    "es": (["La ciudad", "El jardín", "El museo", "El gobierno", "La asociación", "La escuela", "El tiempo",
            "El mercado"],
           ["está especialmente bonita este año", "ha presentado nuevos planes para el verano",
            "abrirá sus puertas a los visitantes este fin de semana", "mantiene su decisión a pesar de las críticas",
            "todavía busca voluntarios de la zona", "fue ayer el tema principal en el ayuntamiento",
            "ha cambiado mucho en los últimos años", "ofrece visitas gratuitas todos los lunes"],
           ["Muchos vecinos están contentos.", "Así lo muestra una encuesta reciente.",
            "Habrá más información la próxima semana.", "Sin embargo, los costes aún no están claros.",
            "Los críticos no están de acuerdo."]),
    "zh": (["这个城市", "我们的花园", "新的博物馆", "当地政府", "这所学校", "今年的天气", "火车站", "附近的市场"],
           ["今年变得特别美丽", "为夏天提出了新的计划", "本周末将向游客开放", "尽管有批评仍然坚持决定",
            "正在寻找附近的志愿者", "昨天成为市政厅讨论的主要话题", "在过去几年里发生了很大变化", "每个星期一提供免费参观"],
           ["很多居民对此感到满意。", "最近的一项调查显示了这一点。", "下周将公布更多信息。", "不过费用仍然不清楚。",
            "批评者有不同的看法。"]),
}
_FOREIGN_TITLES = {"de": "Nachrichten aus der Region", "fr": "Nouvelles de la région",
                   "es": "Noticias de la región", "zh": "本地新闻"}


def foreign_article(rng: random.Random, lang: str) -> tuple[str, list[str]]:
    """(title, paragraphs) in German, French, Spanish or Chinese (`de`, `fr`, `es`, `zh`)."""
    subjects, predicates, closers = _FOREIGN[lang]
    sep, end = ("", "。") if lang == "zh" else (" ", ".")
    paras = []
    for _ in range(rng.randint(3, 5)):
        sents = [f"{rng.choice(subjects)}{'' if lang == 'zh' else ' '}{rng.choice(predicates)}{end}"
                 for _ in range(rng.randint(3, 4))]
        sents.append(rng.choice(closers))
        paras.append(sep.join(sents))
    return _FOREIGN_TITLES[lang], paras


_SPAM_WORDS = ["cheap", "best price", "buy now", "casino", "free bonus", "discount", "replica watches",
               "payday loans", "win big", "online pharmacy", "crypto profits", "limited offer"]


def spam_page(rng: random.Random) -> tuple[str, list[str]]:
    """Keyword-stuffed SEO text: repeated phrases, link-like lines, no real sentences."""
    kw = rng.sample(_SPAM_WORDS, 4)
    title = " | ".join(w.title() for w in kw)
    lines = [" ".join(rng.choice(kw) for _ in range(rng.randint(6, 12))) for _ in range(rng.randint(8, 14))]
    lines += [f"{w} {w} {w} click here" for w in kw]
    return title, lines


FIRST = ["Maria", "James", "Aisha", "Tomás", "Chen", "Olivia", "Liam", "Sofia", "Noah", "Emma", "Lucas", "Priya"]
LAST = ["Keller", "Johnson", "Okafor", "García", "Wang", "Brown", "Müller", "Rossi", "Smith", "Nakamura",
        "Dubois", "Patel"]


def _luhn_complete(digits: list[int]) -> list[int]:
    total = 0
    for i, d in enumerate(reversed(digits)):
        d = d * 2 if i % 2 == 0 else d
        total += d - 9 if d > 9 else d
    return digits + [(10 - total % 10) % 10]


def fake_pii(rng: random.Random) -> dict[str, str]:
    """A made-up person, email, US phone number and Luhn-valid Visa number."""
    first, last = rng.choice(FIRST), rng.choice(LAST)
    ascii_last = last.translate(str.maketrans("áüéí", "auei")).lower()
    card = _luhn_complete([4] + [rng.randint(0, 9) for _ in range(14)])
    digits = "".join(map(str, card))
    return {
        "person": f"{first} {last}",
        "email": f"{first.lower().replace('á', 'a')}.{ascii_last}{rng.randint(1, 99)}@{rng.choice(['mailbox.org', 'gmail.com', 'outlook.com'])}",
        "phone": f"({rng.choice([212, 312, 415, 617, 206, 303])}) {rng.randint(200, 989)}-{rng.randint(1000, 9999)}",
        "card": " ".join(digits[i: i + 4] for i in range(0, 16, 4)),
    }


def pii_sentences(pii: dict[str, str]) -> list[str]:
    return [f"For questions about this article, contact {pii['person']} at {pii['email']} "
            f"or call {pii['phone']} during office hours.",
            f"One reader, {pii['person']}, accidentally posted the card number {pii['card']} in the comments, "
            "and we have asked the bank to cancel it."]
