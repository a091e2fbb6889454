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


# --- generation: batched sampling, continuous batching, the engine (tiny random model, no Ray)

@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    import torch

    from serving.generate import ChatGenerator
    from serving.tiny_model import build_tiny_model

    # One intra-op thread, as in the LLM replica: on a busy 2-core box more threads only contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield ChatGenerator.load(build_tiny_model(str(tmp_path_factory.mktemp("m") / "tiny")), device="cpu")
    torch.set_num_threads(threads)


def prompts(gen, n):
    texts = ["hi", "Tell me a long story about a dragon and a knight, please", "x", "What is two plus two?"]
    return [gen.encode([{"role": "user", "content": texts[i % len(texts)] * (1 + i // len(texts))}]) for i in range(n)]


def test_sample_rows_respects_each_rows_settings():
    import torch

    from serving.generate import Sampling, sample_rows

    logits = torch.tensor([[0.0, 3.0, 2.0, 1.0]] * 4)
    rows = [Sampling(temperature=0), Sampling(top_k=1), Sampling(top_p=0.01), Sampling(top_k=2)]
    seen = set()
    for _ in range(200):
        picks = sample_rows(logits, rows, [None] * 4)
        assert picks[:3] == [1, 1, 1]
        seen.add(picks[3])
    assert seen == {1, 2}  # top-2 only, both reachable
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    flat = torch.zeros(1, 50)
    assert [sample_rows(flat, [Sampling()], [g1]) for _ in range(5)] == \
           [sample_rows(flat, [Sampling()], [g2]) for _ in range(5)]


def test_rows_joining_a_running_batch_decode_as_if_alone(gen):
    from serving.generate import Sampling

    greedy = lambda n=16: Sampling(max_tokens=n, temperature=0)  # noqa: E731
    ps, lengths = prompts(gen, 4), (16, 16, 16, 6)
    solo = [gen.generate([p], [greedy(n)])[0] for p, n in zip(ps, lengths, strict=True)]
    alone = [(r.ids, r.finish_reason) for r in solo]
    assert [(r.ids, r.finish_reason) for r in gen.generate(ps, [greedy(n) for n in lengths])] == alone
    d = gen.start(ps[:2], [greedy(), greedy()])
    rows = list(d.rows)
    for joiner, n, after in ((ps[2], 16, 3), (ps[3], 6, 5)):
        for _ in range(after):
            d.step()
        new = gen.start([joiner], [greedy(n)])
        rows += new.rows
        new.step()
        d = d.merge(new)
    while not d.done:
        d.step()
    assert [(r.ids, r.finish_reason) for r in rows] == alone
    assert d.rows == [] and d.cache is None


def test_seeded_reply_does_not_depend_on_batch_mates(gen):
    from serving.generate import Sampling

    ps = prompts(gen, 3)
    s = Sampling(max_tokens=10, seed=5, top_k=40, top_p=0.9)
    alone = gen.generate([ps[1]], [s])[0].text
    mixed = gen.generate(ps, [Sampling(max_tokens=4, temperature=0.7), s, Sampling(max_tokens=10, seed=1)])
    assert mixed[1].text == alone


@pytest.mark.parametrize("max_rows", [1, 8])
def test_engine_batches_concurrent_requests_and_cancels(gen, max_rows):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from serving.engine import Engine
    from serving.generate import Sampling

    ps = prompts(gen, 6)
    alone = [gen.generate([p], [Sampling(max_tokens=12, temperature=0)])[0].text for p in ps]

    async def scenario():
        engine = Engine(gen, max_rows=max_rows, wait_s=0.01, pool=ThreadPoolExecutor(1))
        slots = [engine.submit(p, Sampling(max_tokens=12, temperature=0)) for p in ps[:3]]
        await asyncio.sleep(0.05)  # let a batch start, then more requests arrive mid-decode
        stream = engine.submit(ps[3], Sampling(max_tokens=12, temperature=0), stream=True)
        slots += [engine.submit(p, Sampling(max_tokens=12, temperature=0)) for p in ps[4:]]
        doomed = engine.submit(ps[0], Sampling(max_tokens=200, temperature=0), stream=True)
        deltas = [d async for d in stream.deltas()]
        async for _ in doomed.deltas():
            engine.cancel(doomed)
            break
        rows = await asyncio.gather(*(s.result() for s in slots))
        while engine.decode is not None:
            await asyncio.sleep(0.01)
        return engine, [r.text for r in rows], "".join(deltas), doomed

    engine, texts, streamed, doomed = asyncio.run(scenario())
    assert texts == alone[:3] + alone[4:] and streamed == alone[3]
    assert len(doomed.row.ids) < 200 and engine.slots == {}
    mean_batch = engine.row_steps / engine.passes
    assert mean_batch == 1.0 if max_rows == 1 else mean_batch > 1.5
