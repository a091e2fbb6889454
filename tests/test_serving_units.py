"""Serving's pure parts without Ray: stop strings, sampling, request validation, keys, rate limit, config."""

from __future__ import annotations

import json

import pytest

from serving.api import RateLimiter
from serving.config import ServeConfig, load_api_keys
from serving.generate import stop_split
from serving.schemas import ApiError, Limits, parse_chat_request

LIM = Limits(model="m", max_messages=3, max_tokens_limit=64, default_max_tokens=8, system_prompt="be brief")


@pytest.mark.parametrize("text,stops,expected", [
    ("hello world", [], (11, False)),
    ("hello wor", ["world"], (6, False)),      # "wor" may grow into the stop string: held back
    ("hello world and more", ["world"], (6, True)),
    ("abc\ufffd", [], (3, False)),            # half a multi-byte character is not final
    ("x END y STOP", ["STOP", "END"], (2, True)),  # the earliest stop wins
])
def test_stop_split(text, stops, expected):
    assert stop_split(text, stops) == expected


def body(**kw):
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw}).encode()


def test_parse_valid_request_fills_defaults_and_system_prompt():
    req = parse_chat_request(body(stop="\n", seed=3), LIM)
    assert req["max_tokens"] == 8 and req["stop"] == ["\n"] and req["seed"] == 3
    assert req["messages"][0] == {"role": "system", "content": "be brief"}
    parts = parse_chat_request(body(messages=[{"role": "user", "content": [{"type": "text", "text": "a"}]}]), LIM)
    assert parts["messages"][-1]["content"] == "a"


@pytest.mark.parametrize("raw,status,param", [
    (b"[1, 2]", 400, None),
    (body(model="other"), 404, "model"),
    (body(messages=[{"role": "user", "content": "x"}] * 4), 400, "messages"),
    (body(max_tokens=65), 400, "max_tokens"),
    (body(top_p=0), 400, "top_p"),
    (body(n=2), 400, "n"),
    (body(stop=["a", "b", "c", "d", "e"]), 400, "stop"),
    (body(messages=[{"role": "robot", "content": "x"}]), 400, "messages.0.role"),
    (body(surprise=1), 400, "surprise"),
])
def test_parse_rejects_bad_requests(raw, status, param):
    with pytest.raises(ApiError) as e:
        parse_chat_request(raw, LIM)
    assert e.value.status == status and e.value.param == param
    assert set(e.value.body()["error"]) == {"message", "type", "param", "code"}


def test_rate_limiter_refills_over_time():
    now = [0.0]
    rl = RateLimiter(clock=lambda: now[0])
    assert [rl.acquire("a", 2) for _ in range(2)] == [0.0, 0.0]
    wait = rl.acquire("a", 2)
    assert wait == pytest.approx(30.0)
    assert rl.acquire("b", 2) == 0.0  # buckets are per client
    now[0] += 30.0
    assert rl.acquire("a", 2) == 0.0
    assert rl.acquire("a", 0) == 0.0  # 0 = no limit


def test_api_keys_from_env_and_file(tmp_path):
    f = tmp_path / "keys"
    f.write_text("# comment\nk-file\nk-slow 5\n")
    cfg = ServeConfig(model="x", api_keys_file=str(f), rate_limit_per_minute=60)
    assert load_api_keys(cfg, {"D2D_API_KEYS": "k-env, k2"}) == {"k-env": 60, "k2": 60, "k-file": 60, "k-slow": 5}
    f.write_text("k bad words\n")
    with pytest.raises(ValueError, match="api_keys_file"):
        load_api_keys(cfg, {})


@pytest.mark.parametrize("kw,field", [
    ({}, "model"), ({"model": "x", "port": 0}, "port"), ({"model": "x", "max_batch_size": 0}, "max_batch_size"),
    ({"model": "x", "autoscaling": {"Nope": {}}}, "autoscaling"),
    ({"model": "x", "default_max_tokens": 999}, "default_max_tokens"),
])
def test_config_errors_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        ServeConfig(**kw)
