"""`d2d chat` driven through stdin: a local model folder, and a client of an OpenAI-style SSE server."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time

import pytest
import uvicorn
from conftest import ROOT, free_port
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from pipeline.chat_cli import ChatConfig, HttpBackend, chat_loop, iter_sse


def test_local_chat_multi_turn_with_commands(tmp_path):
    from serving.tiny_model import build_tiny_model

    model = build_tiny_model(str(tmp_path / "m"))
    script = "Hello there\n/system Answer briefly.\nWho are you?\n/bogus\n/reset\n/quit\nnever sent\n"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "chat", "--model", model, "--max-new-tokens", "6", "--seed", "1"],
        input=script, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count("assistant> ") == 2
    assert "[system prompt set; conversation reset]" in out
    assert "[unknown command /bogus" in out and "[conversation reset]" in out
    assert "[2 replies; bye]" in proc.stderr


def test_bad_chat_config_names_the_field():
    with pytest.raises(ValueError, match="model/url"):
        ChatConfig()
    with pytest.raises(ValueError, match="url"):
        ChatConfig(url="127.0.0.1:8000")


def test_iter_sse_stops_at_done_and_skips_noise():
    lines = [": keep-alive", "", 'data: {"a": 1}', "event: x", "data: not json", 'data: {"a": 2}',
             "data: [DONE]", 'data: {"a": 3}']
    assert [c["a"] for c in iter_sse(iter(lines))] == [1, 2]


@pytest.fixture
def sse_server():
    """A real HTTP server speaking OpenAI's streaming chat shape; records each request body."""
    app = FastAPI()
    seen: list[dict] = []

    @app.get("/v1/models")
    def models():
        return {"object": "list", "data": [{"id": "d2d-test", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        if request.headers.get("authorization") != "Bearer k1":
            return JSONResponse({"error": {"message": "bad key", "type": "auth"}}, status_code=401)
        body = await request.json()
        seen.append(body)
        last = body["messages"][-1]["content"]
        blocked = "bomb" in last

        def events():
            words = ["I", " cannot", " help."] if blocked else ["You", " said", f" {len(body['messages'])}"]
            for w in words:
                yield "data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": w}}]}) + "\n\n"
            end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "content_filter" if blocked else "stop"}],
                   "guardrails": {"input": {"action": "block" if blocked else "allow", "reasons": ["harmful"]}}}
            yield "data: " + json.dumps(end) + "\n\ndata: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", seen
    server.should_exit = True
    thread.join(timeout=10)


def test_http_chat_streams_keeps_history_and_shows_guard_verdicts(sse_server):
    url, seen = sse_server
    backend = HttpBackend(ChatConfig(url=url, api_key="k1"))
    out = io.StringIO()
    replies = chat_loop(backend, io.StringIO("hi\nand again\nhow to build a bomb\n/quit\n"), out, system="Be nice.")
    text = out.getvalue()
    assert replies == 3, text
    assert "assistant> You said 2\n" in text and "assistant> You said 4" in text
    assert "[blocked by the server's guardrails]" in text and "[input guard: block (harmful)]" in text
    assert seen[0]["model"] == "d2d-test" and seen[0]["stream"] is True
    assert [m["role"] for m in seen[1]["messages"]] == ["system", "user", "assistant", "user"]
    assert seen[1]["messages"][2]["content"] == "You said 2"


def test_http_chat_reports_auth_error_and_keeps_going(sse_server):
    url, _ = sse_server
    backend = HttpBackend(ChatConfig(url=url, api_key="wrong"))
    out = io.StringIO()
    assert chat_loop(backend, io.StringIO("hi\n"), out) == 0
    assert "[error 401: bad key]" in out.getvalue()
