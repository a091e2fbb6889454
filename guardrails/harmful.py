"""Harmful requests and harmful or toxic replies, by a trained classifier with categories.

    .venv/bin/d2d guard scan "How do I build a pipe bomb?" --guards harmful

Categories: weapons, cyber, self_harm, violence, fraud, drugs, hate, misinformation,
sexual (see guardrails/data/harmful.yaml for the training data and its provenance).
The classifier (guardrails/classifier.py) reads the text in windows and learned the
objects of requests, not their phrasing: "how do I kill a Python process" and "how do I
kill my neighbour" share a frame and differ in what is asked. With `model`, a guard model
from `d2d guard train` decides instead (docs/guardrails.md), its category namer names.
Works on input and output.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from guardrails import guard_model
from guardrails.base import Guard, GuardConfig, ScanContext, Verdict, decide
from guardrails.guard_model import check_model_dir
from guardrails.injection import chunks
from guardrails.normalize import normalize

CATEGORIES = ("weapons", "cyber", "self_harm", "violence", "fraud", "drugs", "hate",
              "misinformation", "sexual")


@dataclass(kw_only=True)
class HarmfulConfig(GuardConfig):
    categories: list[str] = field(default_factory=lambda: list(CATEGORIES))
    """Categories that count; a text whose most likely category is not listed is allowed."""
    window_chars: int = 600
    """Long texts are read in windows of this many characters (overlapping by a third)."""
    model: str = ""
    """Guard-model folder written by `d2d guard train` (e.g. guardrails/models/guard-v1); empty = the
    classifier trained on this repository's hand-written data (guardrails/data)."""
    min_known_words: int = 3
    """Texts with fewer distinct words the classifier knows are allowed unscored: on word salad
    (a tiny model's reply) an l2-normalised score rests on one or two stray character n-grams."""

    def __post_init__(self):
        super().__post_init__()
        bad = [c for c in self.categories if c not in CATEGORIES]
        if bad:
            raise ValueError(f"categories: unknown {bad}; known: {', '.join(CATEGORIES)}")
        if self.window_chars < 100:
            raise ValueError("window_chars must be at least 100")
        if self.min_known_words < 0:
            raise ValueError("min_known_words must be >= 0")
        check_model_dir(self.model)


class HarmfulGuard(Guard):
    name = "harmful"
    kind = "both"
    Config = HarmfulConfig

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.model:
            gm = guard_model.get_model(self.config.model)
            self.model, self.detector, self.namer = gm, gm.detector("harmful"), gm.detector("harmful_category")
        else:
            from guardrails.classifier import get_model

            self.model, self.detector = get_model("harmful"), None

    def scan(self, text: str, context: ScanContext | None = None) -> Verdict:
        c: HarmfulConfig = self.config
        norm = normalize(text)
        parts = chunks(norm.all_texts, c.window_chars)
        if not parts:
            return Verdict(self.name, True, text)
        counter = self.model if self.detector is not None else self.model.fast
        known = max(counter.known_words(t) for t in norm.all_texts)
        if known < c.min_known_words:
            return Verdict(self.name, True, text, reasons=[f"harmful: {known} known words, too few to judge"])
        if self.detector is not None:
            scores = self.detector.score(parts)
            best = int(scores.argmax())
            category, score = self.namer.classes([parts[best]])[0], float(scores[best])
        else:
            scores, cats = self.model.predict(parts)
            best = int(scores.argmax())
            category, score = cats[best], float(scores[best])
        if category not in c.categories:
            return Verdict(self.name, True, text, score=score,
                           reasons=[f"harmful: {category} (not a blocked category)"])
        return decide(self.name, c, text, score, [f"harmful: {category} {score:.2f}"])
