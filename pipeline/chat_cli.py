"""`d2d chat`: an interactive terminal chat with a local model folder or an OpenAI-compatible server.

    d2d chat --model runs/demo/sft                       # local Hugging Face folder, streamed
    d2d chat --url http://127.0.0.1:8000 --api-key K     # client of `d2d serve` (SSE streaming)

Multi-turn; commands: `/system TEXT` sets the system prompt (and starts over),
`/reset` forgets the conversation, `/quit` (or end of input) leaves. Lines come
from stdin, so the chat can be scripted: `printf 'Hi\\n/quit\\n' | d2d chat --model M`.
Both back ends render the conversation the same way (the tokenizer's ChatML
template), so a reply differs only by sampling and the server's guardrails.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import ClassVar, TextIO

from pipeline.errors import StageError


@dataclass(kw_only=True)
class ChatConfig:
    model: str = ""
    """Local model folder (Hugging Face format with tokenizer), e.g. runs/demo/sft. Or use `url`."""
    url: str = ""
    """Base URL of an OpenAI-compatible server (`d2d serve`), e.g. http://127.0.0.1:8000."""
    api_key: str = ""
    """Bearer key for `url`; empty reads the D2D_API_KEY environment variable (none if unset)."""
    served_model: str = ""
    """The `model` field sent to the server; empty asks GET /v1/models and takes the first."""
    system: str = ""
    """System prompt; empty uses the model folder's default (sft.json), if any."""
    temperature: float = 0.7
    """Sampling temperature; 0 decodes greedily."""
    top_p: float = 0.95
    """Nucleus sampling mass."""
    top_k: int = 50
    """Sample from the k most likely tokens (local model only; 0 disables)."""
    max_new_tokens: int = 256
    """Longest reply, in tokens."""
    seed: int | None = None
    """Sampling seed for reproducible replies; none samples freshly."""
    timeout_s: float = 120.0
    """HTTP timeout for `url` requests."""

    presets: ClassVar[dict[str, dict]] = {}

    def __post_init__(self):
        if bool(self.model) == bool(self.url):
            raise ValueError("model/url: give exactly one of --model FOLDER or --url http://HOST:PORT")
        if self.url and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url: {self.url!r} must start with http:// or https://")
        if self.temperature < 0:
            raise ValueError("temperature: must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p: must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens: must be >= 1")


class LocalBackend:
    """A Hugging Face model folder on this machine, streamed by the project's one sampler (pipeline.engine)."""

    def __init__(self, cfg: ChatConfig):
        from pipeline.engine import Engine
        from pipeline.tokenizer import stop_token_ids

        if not os.path.isdir(cfg.model):
            raise StageError(f"model folder {cfg.model} not found: run `d2d sft` first or give another folder")
        self.cfg = cfg
        self.engine = Engine.load(cfg.model)
        self.tok = self.engine.tok
        self.engine.eos_ids = set(stop_token_ids(self.tok))
        defaults = os.path.join(cfg.model, "sft.json")
        self.default_system = ""
        if os.path.exists(defaults):
            with open(defaults) as f:
                self.default_system = json.load(f).get("system_prompt", "")

    def encode(self, messages: list[dict]) -> list[int]:
        return self.engine.encode(messages)

    def stream(self, messages: list[dict]) -> Iterator[str]:
        from pipeline.engine import Sampling

        s = Sampling(max_tokens=self.cfg.max_new_tokens, temperature=self.cfg.temperature, top_p=self.cfg.top_p,
                     top_k=self.cfg.top_k, seed=self.cfg.seed)
        yield from self.engine.stream(self.encode(messages), s)


class HttpBackend:
    """An OpenAI-compatible `/v1/chat/completions` endpoint, read as server-sent events."""

    def __init__(self, cfg: ChatConfig):
        import httpx

        self.cfg = cfg
        key = cfg.api_key or os.environ.get("D2D_API_KEY", "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.client = httpx.Client(base_url=cfg.url.rstrip("/"), headers=headers, timeout=cfg.timeout_s)
        self.default_system = ""
        self.model = cfg.served_model or self._first_model()
        self.notes: list[str] = []

    def _first_model(self) -> str:
        import httpx

        try:
            r = self.client.get("/v1/models")
        except httpx.HTTPError as e:
            raise StageError(f"cannot reach {self.cfg.url}: {e}") from None
        if r.status_code != 200:
            raise StageError(f"{self.cfg.url}/v1/models answered {r.status_code}: {_error_text(r.text)}")
        data = r.json().get("data") or [{}]
        return data[0].get("id", "default")

    def stream(self, messages: list[dict]) -> Iterator[str]:
        import httpx

        body = {"model": self.model, "messages": messages, "stream": True, "temperature": self.cfg.temperature,
                "top_p": self.cfg.top_p, "max_tokens": self.cfg.max_new_tokens}
        if self.cfg.seed is not None:
            body["seed"] = self.cfg.seed
        self.notes = []
        try:
            with self.client.stream("POST", "/v1/chat/completions", json=body) as r:
                if r.status_code != 200:
                    r.read()
                    self.notes.append(f"[error {r.status_code}: {_error_text(r.text)}]")
                    return
                for chunk in iter_sse(r.iter_lines()):
                    choice = (chunk.get("choices") or [{}])[0]
                    piece = (choice.get("delta") or {}).get("content")
                    if piece:
                        yield piece
                    if choice.get("finish_reason") == "content_filter":
                        self.notes.append("[blocked by the server's guardrails]")
                    guard = chunk.get("guardrails")
                    if guard:
                        self.notes.extend(_guard_notes(guard))
        except httpx.HTTPError as e:
            self.notes.append(f"[connection error: {e}]")


def iter_sse(lines: Iterator[str]) -> Iterator[dict]:
    """JSON payloads of `data:` lines until `data: [DONE]`; comments and other fields skipped."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        try:
            yield json.loads(payload)
        except json.JSONDecodeError:
            continue


def _error_text(body: str) -> str:
    try:
        err = json.loads(body).get("error", {})
        return err.get("message", body) if isinstance(err, dict) else str(err)
    except (json.JSONDecodeError, AttributeError):
        return body[:200]


def _guard_notes(guard: dict) -> list[str]:
    notes = []
    for side in ("input", "output"):
        v = guard.get(side) or {}
        action = v.get("action")
        if action and action not in ("allow", "pass", "allowed"):
            reasons = ", ".join(map(str, v.get("reasons") or v.get("guards") or [])) or "no reason given"
            notes.append(f"[{side} guard: {action} ({reasons})]")
    return notes


HELP = "commands: /system TEXT (set system prompt, start over), /reset, /quit"


def chat_loop(backend, stdin: TextIO, stdout: TextIO, system: str = "") -> int:
    """Read user lines, stream replies; returns the number of assistant replies."""
    system = system or backend.default_system
    history: list[dict] = []
    replies = 0
    interactive = stdin.isatty()
    print(f"chatting ({'system: ' + system if system else 'no system prompt'}); {HELP}", file=stdout, flush=True)
    while True:
        if interactive:
            print("you> ", end="", file=stdout, flush=True)
        line = stdin.readline()
        if not line:
            break
        text = line.rstrip("\n")
        if not text.strip():
            continue
        cmd = text.strip()
        if cmd in ("/quit", "/exit"):
            break
        if cmd == "/reset":
            history = []
            print("[conversation reset]", file=stdout, flush=True)
            continue
        if cmd == "/system" or cmd.startswith("/system "):
            system, history = cmd[len("/system"):].strip(), []
            print(f"[system prompt {'set' if system else 'cleared'}; conversation reset]", file=stdout, flush=True)
            continue
        if cmd.startswith("/"):
            print(f"[unknown command {cmd.split()[0]}; {HELP}]", file=stdout, flush=True)
            continue
        history.append({"role": "user", "content": text})
        messages = ([{"role": "system", "content": system}] if system else []) + history
        print("assistant> ", end="", file=stdout, flush=True)
        reply = ""
        for piece in backend.stream(messages):
            reply += piece
            print(piece, end="", file=stdout, flush=True)
        print(file=stdout, flush=True)
        for note in getattr(backend, "notes", []):
            print(note, file=stdout, flush=True)
        if reply:
            history.append({"role": "assistant", "content": reply})
            replies += 1
        else:  # blocked or failed: forget the unanswered turn so the next one starts clean
            history.pop()
    return replies


def run(cfg: ChatConfig) -> None:
    backend = HttpBackend(cfg) if cfg.url else LocalBackend(cfg)
    n = chat_loop(backend, sys.stdin, sys.stdout, cfg.system)
    print(f"[{n} replies; bye]", file=sys.stderr)
