"""Verifiable arithmetic conversations: a skill SFT teaches and RL (GRPO) improves.

    from pipeline.chat.arithmetic import make_problems, heldout_problems, to_messages, parse_answer
    train = make_problems(1000, seed=0)            # [{"question": "What is 12 + 7?", "answer": 19}, ...]
    test = heldout_problems(200, seed=0)           # never overlaps any make_problems(...) output
    to_messages(train[0])                          # user question + "The answer is 19."
    parse_answer("The answer is 19.")              # 19

The held-out split is a property of the problem itself (a stable hash of its
question text), not of the seed, so no training problem from any seed, count or
mixture ever appears in the held-out set as long as both use the same ops/range.
Subtraction orders its operands so answers are never negative; division only
yields exact quotients. Run `python -m pipeline.chat.arithmetic` for samples.
"""

from __future__ import annotations

import hashlib
import random
import re

OPS = "+-*/"
#: One problem in HELDOUT_BUCKETS (by question hash) belongs to the held-out set.
HELDOUT_BUCKETS = 10
ANSWER_PREFIX = "The answer is"

_ANSWER_RE = re.compile(r"answer is\s*:?\s*(-?[\d,]*\d)", re.IGNORECASE)
_GSM8K_RE = re.compile(r"####\s*(-?[\d,]*\d)")
_INT_RE = re.compile(r"-?\d[\d,]*")


def format_answer(n: int) -> str:
    """The fixed assistant answer: `The answer is 42.`"""
    return f"{ANSWER_PREFIX} {int(n)}."


def parse_answer(text: str, *, strict: bool = False) -> int | None:
    """The integer answer in a reply, or None.

    Recognises `The answer is N` (our format) and GSM8K's `#### N`; with
    `strict=False` it falls back to the last integer in the text, so a reply
    that is right but off-format still scores (RL can add a format reward).
    """
    if not text:
        return None
    for pattern in (_ANSWER_RE, _GSM8K_RE):
        m = pattern.search(text)
        if m:
            return int(m.group(1).replace(",", ""))
    if strict:
        return None
    found = _INT_RE.findall(text)
    if not found:
        return None
    try:
        return int(found[-1].replace(",", "").rstrip(","))
    except ValueError:
        return None


def _check(ops: str, lo: int, hi: int) -> None:
    if not ops or any(o not in OPS for o in ops):
        raise ValueError(f"ops: {ops!r} must be a non-empty string of characters from {OPS!r}")
    if lo > hi:
        raise ValueError(f"lo/hi: lo={lo} must be <= hi={hi}")
    if ops == "/" and hi <= 0:
        raise ValueError("ops: division needs hi >= 1 (a non-zero divisor)")


def _draw(rng: random.Random, ops: str, lo: int, hi: int) -> dict:
    op = rng.choice(ops)
    a, b = rng.randint(lo, hi), rng.randint(lo, hi)
    if op == "-" and a < b:
        a, b = b, a
    if op == "/":
        if hi < max(lo, 1):  # no positive divisor in range: use another op
            return _draw(rng, ops.replace("/", "") or "+", lo, hi)
        b = rng.randint(max(lo, 1), hi)
        a = b * rng.randint(lo, hi)
    return _problem(a, op, b)


def _problem(a: int, op: str, b: int) -> dict:
    answer = {"+": a + b, "-": a - b, "*": a * b}[op] if op != "/" else a // b
    return {"question": f"What is {a} {op} {b}?", "answer": answer}


def is_heldout(question: str) -> bool:
    """Whether a question belongs to the held-out split (stable across processes)."""
    h = hashlib.blake2b(question.encode(), digest_size=8).digest()
    return int.from_bytes(h, "big") % HELDOUT_BUCKETS == 0


def _sample(n: int, seed: int, ops: str, lo: int, hi: int, heldout: bool, unique: bool) -> list[dict]:
    if n < 0:
        raise ValueError(f"n: must be >= 0, got {n}")
    _check(ops, lo, hi)
    # The salt keeps a training stream and a held-out stream with the same seed independent.
    rng = random.Random(f"arith-{seed}-{'heldout' if heldout else 'train'}")
    out: list[dict] = []
    seen: set[str] = set()
    tries, max_tries = 0, 200 * max(n, 1) + 10_000
    while len(out) < n:
        tries += 1
        if tries > max_tries:
            split = "held-out" if heldout else "training"
            raise ValueError(
                f"n: cannot draw {n} {'distinct ' if unique else ''}{split} problems from "
                f"ops={ops!r}, lo={lo}, hi={hi} (only {len(out)} found); widen the range"
            )
        p = _draw(rng, ops, lo, hi)
        if is_heldout(p["question"]) != heldout or (unique and p["question"] in seen):
            continue
        seen.add(p["question"])
        out.append(p)
    return out


def make_problems(n: int, seed: int, ops: str = "+-*", lo: int = 0, hi: int = 99) -> list[dict]:
    """`n` training problems `{"question", "answer"}`, deterministic in all arguments.

    Repeats are allowed (small ranges have few distinct problems); none is ever held out.
    """
    return _sample(n, seed, ops, lo, hi, heldout=False, unique=False)


def heldout_problems(n: int, seed: int = 0, ops: str = "+-*", lo: int = 0, hi: int = 99) -> list[dict]:
    """`n` distinct held-out problems, disjoint from every `make_problems` output."""
    return _sample(n, seed, ops, lo, hi, heldout=True, unique=True)


def heldout_pool(ops: str = "+-*", lo: int = 0, hi: int = 99) -> list[dict]:
    """Every held-out problem `make_problems` could draw for ops/range (enumerated: small ranges only)."""
    _check(ops, lo, hi)
    if (hi - lo + 1) ** 2 * len(ops) > 4_000_000:
        raise ValueError(f"lo/hi: the range {lo}..{hi} is too large to enumerate; draw with heldout_problems")
    out: dict[str, dict] = {}
    for op in ops:
        for a in range(lo, hi + 1):
            for b in range(lo, hi + 1):
                if op == "-" and a < b or op == "/" and b < max(lo, 1):
                    continue
                p = _problem(a * b if op == "/" else a, op, b)  # division draws quotient and divisor
                if is_heldout(p["question"]):
                    out.setdefault(p["question"], p)
    return list(out.values())


def prompt_messages(problem: dict, system: str | None = None) -> list[dict]:
    """The conversation up to the question (for sampling a reply in eval and RL)."""
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": problem["question"]}]


def to_messages(problem: dict, system: str | None = None) -> list[dict]:
    """A training conversation: (system), user question, assistant `The answer is N.`"""
    return prompt_messages(problem, system) + [
        {"role": "assistant", "content": format_answer(problem["answer"])}
    ]


if __name__ == "__main__":
    for p in make_problems(3, seed=0) + heldout_problems(2, seed=0):
        print(to_messages(p))
