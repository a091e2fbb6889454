"""Pure checks of the endpoint's hardening rules (no Ray): stream hold-back, limiter bounds, Host, exposure, audit.

    PYTHONPATH=$PWD .venv/bin/python -m pytest tests/test_serving_hardening.py -q
"""

from __future__ import annotations

import json

import pytest

from guardrails.audit import AuditLog
from guardrails.base import ScanContext
from guardrails.chain import GuardChain, sha256
from guardrails.policy import load_policy
from serving.admission import RateLimiter, host_name
from serving.config import ServeConfig
from serving.guards import HoldBack, summary
from serving.schemas import ApiError, Limits, parse_chat_request

KEY = "AKIAIOSFODNN7EXAMPLE"
OUT = {"input": [{"guard": "secrets"}], "output": [{"guard": "leak"}, {"guard": "secrets", "action": "redact"}],
       "stream": {"window_chars": 120, "stride_chars": 20}}


def stream(reply: str, ctx: ScanContext, step: int = 3, holdback: int = 32) -> tuple[str, HoldBack]:
    chain = GuardChain.output_from_policy(load_policy(OUT))
    h = HoldBack(lambda t: chain.scan(t, ctx), 20, 120, holdback)
    sent = []
    for i in range(0, len(reply), step):
        h.add(reply[i:i + step])
        if h.due():
            out = h.check()
            if out is None:
                return "".join(sent), h
            sent.append(out)
    out = h.check(final=True)
    return "".join(sent) + (out or ""), h


def test_hold_back_redacts_a_secret_cut_across_deltas():
    reply = "Here you go, the key for the bucket is " + KEY + " and keep it safe. " * 4
    sent, h = stream(reply, ScanContext())
    assert KEY not in sent and "AKIA" not in sent and not h.blocked
    assert sent.startswith("Here you go") and sent.endswith("keep it safe. ")
    assert summary(h.results)["action"] == "redact"


def test_hold_back_releases_nothing_unscanned():
    chain = GuardChain.output_from_policy(load_policy(OUT))
    seen = []
    h = HoldBack(lambda t: (seen.append(t), chain.scan(t, ScanContext()))[1], 20, 120, 32)
    released = ""
    for word in ("lorem ipsum dolor sit amet " * 8).split(" "):
        h.add(word + " ")
        if h.due():
            released += h.check()
            # Everything released lies in text a scan covered, at least `holdback` before its end.
            assert len(released) <= max(0, len(h.text) - 32)
    assert seen and len(released) < len(h.text)


def test_hold_back_blocks_on_the_canary_before_sending_it():
    ctx = ScanContext(system_prompt="You are Bob. (ref d2d-c0ffee)", canary="d2d-c0ffee")
    sent, h = stream("Sure. My reference is d2d-c0ffee, as you asked." + " ok" * 40, ctx)
    assert "c0ffee" not in sent and h.blocked
    assert summary(h.results, "")["action"] == "block"


def test_rate_limiter_table_is_bounded_and_peek_spends_nothing():
    now = [0.0]
    rl = RateLimiter(clock=lambda: now[0], max_clients=3)
    for i in range(10):
        assert rl.acquire(f"ip:{i}", 1) == 0.0
    assert len(rl.buckets) == 3 and "ip:9" in rl.buckets and "ip:0" not in rl.buckets
    assert rl.peek("ip:9", 1) > 0 and rl.peek("ip:9", 1) == rl.acquire("ip:9", 1)
    assert rl.peek("ip:new", 1) == 0.0 and "ip:new" not in rl.buckets


@pytest.mark.parametrize("header,name", [("127.0.0.1:8000", "127.0.0.1"), ("LOCALHOST.", "localhost"),
                                         ("[::1]:8000", "::1"), ("evil.example", "evil.example"), ("", "")])
def test_host_name(header, name):
    assert host_name(header) == name


def test_host_names_and_exposure():
    assert ServeConfig(model="m").host_names() >= {"127.0.0.1", "localhost", "::1"}
    assert "chat.example" in ServeConfig(model="m", host="0.0.0.0", allowed_hosts=["Chat.Example"]).host_names()
    assert ServeConfig(model="m", allowed_hosts=["*"]).host_names() == {"*"}
    with pytest.raises(ValueError, match="allow_anonymous"):
        ServeConfig(model="m", host="0.0.0.0").check_exposure(keyed=False)
    ServeConfig(model="m", host="0.0.0.0").check_exposure(keyed=True)
    ServeConfig(model="m", host="0.0.0.0", allow_anonymous=True).check_exposure(keyed=False)
    ServeConfig(model="m").check_exposure(keyed=False)


@pytest.mark.parametrize("kw,field", [({"body_timeout_s": 0}, "body_timeout_s"), ({"request_timeout_s": -1},
                                      "request_timeout_s"), ({"allowed_hosts": "x"}, "allowed_hosts"),
                                      ({"rate_limit_clients": 0}, "rate_limit_clients"),
                                      ({"auth_failures_per_minute": -1}, "auth_failures_per_minute")])
def test_new_config_errors_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        ServeConfig(model="m", **kw)


def test_operator_prompt_leads_and_client_system_follows():
    lim = Limits("m", 8, 64, 8, system_prompt="operator")
    msgs = [{"role": "system", "content": "client"}, {"role": "user", "content": "hi"}]
    req = parse_chat_request(json.dumps({"model": "m", "messages": msgs}).encode(), lim)
    assert [m["content"] for m in req["messages"]] == ["operator", "client", "hi"]


@pytest.mark.parametrize("patch,param", [({"seed": 2**64}, "seed"), ({"seed": -(2**63) - 1}, "seed"),
                                         ({"max_tokens": "5"}, "max_tokens"), ({"stream": "yes"}, "stream"),
                                         ({"temperature": True}, "temperature"), ({"top_k": 10**7}, "top_k")])
def test_numbers_are_strict_and_bounded(patch, param):
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], **patch}
    with pytest.raises(ApiError) as e:
        parse_chat_request(json.dumps(body).encode(), Limits("m", 8, 64, 8))
    assert e.value.status == 400 and e.value.param == param


def test_audit_hmac_needs_the_key(tmp_path):
    r = GuardChain.input_from_policy(load_policy(OUT)).scan("key " + KEY, ScanContext())
    a, b = AuditLog(tmp_path / "a.jsonl", "k1"), AuditLog(tmp_path / "b.jsonl", "k2")
    a.write("r", "input", r)
    b.write("r", "input", r)
    ra, rb = (json.loads((tmp_path / f).read_text().splitlines()[0]) for f in ("a.jsonl", "b.jsonl"))
    assert ra["text_hmac"] == a.digest("key " + KEY) != rb["text_hmac"]
    assert sha256("key " + KEY) not in (tmp_path / "a.jsonl").read_text() and ra["key_id"] != rb["key_id"]
