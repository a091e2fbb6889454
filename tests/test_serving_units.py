"""Serving's pure parts without Ray: stop strings, sampling, request validation, keys, rate limit, config."""

from __future__ import annotations

import json

import pytest

from pipeline.engine import stop_split
from serving.api import RateLimiter
from serving.config import ServeConfig, load_api_keys
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


# --- the batcher: continuous batching and failures kept to their request (tiny random model, no Ray)

@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    import torch

    from pipeline.engine import Engine
    from serving.tiny_model import build_tiny_model

    # One intra-op thread, as in the LLM replica: on a busy 2-core box more threads only contend.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Engine.load(build_tiny_model(str(tmp_path_factory.mktemp("m") / "tiny")), device="cpu")
    torch.set_num_threads(threads)


def prompts(gen, n):
    texts = ["hi", "Tell me a long story about a dragon and a knight, please", "x", "What is two plus two?"]
    return [gen.encode([{"role": "user", "content": texts[i % len(texts)] * (1 + i // len(texts))}]) for i in range(n)]


async def _drain(batcher):
    """Wait for the batcher's loop to go idle (no batch running) without a timed sleep."""
    import asyncio

    while batcher.decode is not None or batcher.pending:
        await asyncio.sleep(0)


@pytest.mark.parametrize("max_rows", [1, 8])
def test_batcher_batches_concurrent_requests_and_cancels(gen, max_rows):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.engine import Sampling
    from serving.batcher import Batcher

    ps = prompts(gen, 6)
    alone = [gen.generate([p], [Sampling(max_tokens=12, temperature=0)])[0].text for p in ps]

    async def scenario():
        batcher = Batcher(gen, max_rows=max_rows, wait_s=0.01, pool=ThreadPoolExecutor(1))
        slots = [batcher.submit(p, Sampling(max_tokens=12, temperature=0)) for p in ps[:3]]
        while batcher.passes == 0:  # a batch has started: the next requests arrive mid-decode
            await asyncio.sleep(0)
        stream = batcher.submit(ps[3], Sampling(max_tokens=12, temperature=0), stream=True)
        slots += [batcher.submit(p, Sampling(max_tokens=12, temperature=0)) for p in ps[4:]]
        doomed = batcher.submit(ps[0], Sampling(max_tokens=200, temperature=0), stream=True)
        deltas = [d async for d in stream.deltas()]
        async for _ in doomed.deltas():
            batcher.cancel(doomed)
            break
        rows = await asyncio.gather(*(s.result() for s in slots))
        await _drain(batcher)
        return batcher, [r.text for r in rows], "".join(deltas), doomed

    batcher, texts, streamed, doomed = asyncio.run(scenario())
    assert texts == alone[:3] + alone[4:] and streamed == alone[3]
    assert len(doomed.row.ids) < 200 and batcher.slots == {}
    mean_batch = batcher.row_steps / batcher.passes
    assert mean_batch == 1.0 if max_rows == 1 else mean_batch > 1.5


def test_a_failing_request_ends_alone(gen):
    """An unusable seed is refused before it joins; a row whose decoding raises ends with its error only."""
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from pipeline.engine import RequestError, RowError, Sampling
    from serving.batcher import Batcher

    ps = prompts(gen, 4)
    good = lambda: Sampling(max_tokens=10, temperature=0.8, seed=3)  # noqa: E731
    alone = [gen.generate([p], [good()])[0].text for p in ps]

    async def scenario():
        batcher = Batcher(gen, max_rows=8, wait_s=0.01, pool=ThreadPoolExecutor(1))
        streams = [batcher.submit(p, good(), stream=True) for p in ps[:2]]
        bad_seed = batcher.submit(ps[2], Sampling(max_tokens=10, seed=18446744073709551616), stream=True)
        bad_stop = batcher.submit(ps[3], Sampling(max_tokens=10, stop=[7]))  # not a string: decoding raises
        late = batcher.submit(ps[3], good())
        texts = []
        for s in streams:
            texts.append("".join([d async for d in s.deltas()]))
        errors = []
        for slot in (bad_seed, bad_stop):
            try:
                await slot.result()
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        texts.append((await late.result()).text)
        await _drain(batcher)
        return texts, errors

    texts, (seed_err, stop_err) = asyncio.run(scenario())
    assert texts == [alone[0], alone[1], alone[3]]
    assert isinstance(seed_err, RequestError) and seed_err.param == "seed"
    assert isinstance(stop_err, RowError)
