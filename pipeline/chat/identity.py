"""Identity conversations: teach the model who it is, with a configurable name and maker.

    python -m pipeline.chat.identity --name Dia --maker "the data2dialogue team"

The labs hard-code a few hundred such examples into SFT (and repeat the facts in
a system prompt). Here they come from templates: questions about the model's
name, maker and nature, sometimes after a greeting, sometimes followed by a
thank-you turn, so that identity answers also appear mid-conversation.
"""

from __future__ import annotations

import random

QUESTIONS = [
    "Who are you?", "What is your name?", "What's your name?", "Who made you?",
    "Who created you?", "Who built you?", "What are you?", "Introduce yourself.",
    "Tell me about yourself.", "Are you ChatGPT?", "Are you human?", "who r u",
    "Which company trained you?", "What should I call you?", "Who developed you?",
]

ANSWERS = [
    "I am {name}, an AI assistant made by {maker}.",
    "My name is {name}. I was trained by {maker}.",
    "I'm {name}, a language model built by {maker}. How can I help?",
    "You can call me {name}. {maker_cap} created me to be a helpful assistant.",
    "I am {name}, a small assistant model developed by {maker}.",
]

GREETINGS = [
    ("Hello!", "Hello! I'm {name}. How can I help you today?"),
    ("Hi", "Hi! I'm {name}, an assistant made by {maker}. What can I do for you?"),
    ("Good morning", "Good morning! How can I help you?"),
    ("Hey there", "Hey! What can I help you with?"),
]

CLOSINGS = [
    ("Thanks!", "You're welcome!"),
    ("Thank you.", "Happy to help."),
    ("Goodbye", "Goodbye! Have a nice day."),
]


def _fill(text: str, name: str, maker: str) -> str:
    return text.format(name=name, maker=maker, maker_cap=maker[:1].upper() + maker[1:])


def make_identity(n: int, seed: int, name: str, maker: str, system: str | None = None) -> list[dict]:
    """`n` conversations `{"messages": [...]}`, deterministic in all arguments."""
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    if not name.strip() or not maker.strip():
        raise ValueError("name/maker: must be non-empty")
    rng = random.Random(f"identity-{seed}")
    out = []
    for _ in range(n):
        msgs = [{"role": "system", "content": system}] if system else []
        if rng.random() < 0.3:
            q, a = rng.choice(GREETINGS)
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": _fill(a, name, maker)}]
        msgs += [
            {"role": "user", "content": rng.choice(QUESTIONS)},
            {"role": "assistant", "content": _fill(rng.choice(ANSWERS), name, maker)},
        ]
        if rng.random() < 0.3:
            q, a = rng.choice(CLOSINGS)
            msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
        out.append({"messages": msgs})
    return out


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--name", default="Dia")
    ap.add_argument("--maker", default="the data2dialogue team")
    ap.add_argument("-n", type=int, default=3)
    args = ap.parse_args()
    for c in make_identity(args.n, 0, args.name, args.maker):
        print(json.dumps(c))
