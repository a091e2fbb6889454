"""Issue #18, linear time: structural checks that catch a quadratic regex without timing
anything (the CPU-time figures are `cluster.benchmarks.guard.scaling`, in docs/guardrails.md)."""

import re
import re._constants as sre_c
import re._parser as sre_parse

import pytest

from guardrails.base import ScanContext
from guardrails.chain import GuardChain
from guardrails.injection import SIGNALS
from guardrails.pii import LOWER_WORDS, name_candidate_spans
from guardrails.policy import load_policy


def backtracking_runs(pattern: re.Pattern) -> list[str]:
    """Unbounded repeats that can give back what they took (greedy `*`, `+`, `{n,}` or lazy).
    Searched from every start, each can rescan the rest of a long run: quadratic. Bounded
    ({0,40}) and possessive (`*+`) repeats are linear."""
    found = []

    def walk(items):
        for op, av in items:
            if op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
                lo, hi, sub = av
                if hi == sre_c.MAXREPEAT:
                    found.append(f"{op} {{{lo},}} over {list(sub)[:3]}")
                walk(sub)
            elif op == sre_c.POSSESSIVE_REPEAT:
                walk(av[2])
            elif op == sre_c.SUBPATTERN:
                walk(av[-1])
            elif op == sre_c.BRANCH:
                for alt in av[1]:
                    walk(alt)
            elif op in (sre_c.ASSERT, sre_c.ASSERT_NOT, sre_c.ATOMIC_GROUP):
                walk(av[-1] if op != sre_c.ATOMIC_GROUP else av)

    walk(sre_parse.parse(pattern.pattern, pattern.flags))
    return found


PATTERNS = [(f"{n} {i}", p) for i, (n, _, p) in enumerate(SIGNALS)] + [("pii LOWER_WORDS", LOWER_WORDS)]


@pytest.mark.parametrize("name, pattern", PATTERNS, ids=[n for n, _ in PATTERNS])
def test_no_backtracking_unbounded_repeat(name, pattern):
    assert backtracking_runs(pattern) == [], name


def test_checker_sees_a_quadratic_pattern():
    assert backtracking_runs(re.compile(r"(?:^|\n)\s*#{2,}"))
    assert not backtracking_runs(re.compile(r"(?:^|\n)[^\S\n]*+#{2}+"))


def test_long_word_is_one_sentence_without_names():
    # the 31,000-character word that made the PII sentence filter quadratic
    assert name_candidate_spans("a" * 31000) == []
    assert name_candidate_spans("a" * 31000 + " bc") == [(0, 31003)]
    assert name_candidate_spans("my name is john smith") == [(0, 21)]


def test_fail_fast_stops_at_limits_guard():
    policy = load_policy()
    assert policy.fail_fast
    chain = GuardChain.from_policy(policy, "input")
    r = chain.scan("a" * 40000, ScanContext())
    assert not r.allowed and r.action == "block"
    assert [v.guard for v in r.verdicts] == ["limits"]
