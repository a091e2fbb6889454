"""OpenAI chat-completions shapes: the request model, response and chunk builders, error JSON.

    req = parse_chat_request(raw_bytes, limits)      # ApiError(400/404) on anything wrong
    completion(rid, model, text, "stop", usage, guardrails)

Pure (pydantic + json), so the HTTP contract is testable without Ray. Errors follow
OpenAI's shape: {"error": {"message", "type", "param", "code"}}. Types are strict as in
OpenAI's API (`"max_tokens": "5"` and `"stream": "yes"` are 400s) and every number is
bounded, so nothing a client sends can make the engine raise (a seed beyond int64 once
failed every request in the running batch).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class ApiError(Exception):
    """An HTTP error in OpenAI's JSON shape."""

    TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
             404: "invalid_request_error", 405: "invalid_request_error", 408: "invalid_request_error",
             413: "invalid_request_error", 415: "invalid_request_error", 429: "rate_limit_error",
             500: "server_error", 503: "service_unavailable"}

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.TYPES.get(self.status, "invalid_request_error"), self.param, self.code)


def error_body(message: str, type_: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


INT64 = 2**63
STOP_CHARS = 256
STRICT = ConfigDict(extra="forbid", strict=True)


class TextPart(BaseModel):
    model_config = STRICT
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = STRICT
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] = Field(union_mode="left_to_right")
    name: str | None = Field(None, max_length=64)

    def text(self) -> str:
        return self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)


class StreamOptions(BaseModel):
    model_config = STRICT
    include_usage: bool = False


class ChatRequest(BaseModel):
    """The fields of OpenAI's request we honour; penalties and logprobs are refused, not ignored."""

    model_config = STRICT
    model: str = Field(max_length=256)
    messages: list[Message]
    temperature: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False)
    top_p: float = Field(1.0, gt=0.0, le=1.0, allow_inf_nan=False)
    top_k: int = Field(0, ge=0, le=1_000_000)
    max_tokens: int | None = Field(None, ge=1, le=INT64 - 1)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT64 - 1)
    stop: str | list[str] | None = Field(None, union_mode="left_to_right")
    stream: bool = False
    stream_options: StreamOptions | None = None
    seed: int | None = Field(None, ge=-INT64, le=INT64 - 1)
    user: str | None = Field(None, max_length=256)
    n: int = Field(1, ge=1, le=1)
    frequency_penalty: float = Field(0.0, ge=0.0, le=0.0)
    presence_penalty: float = Field(0.0, ge=0.0, le=0.0)


@dataclass
class Limits:
    model: str
    max_messages: int
    max_tokens_limit: int
    default_max_tokens: int
    system_prompt: str = ""


def _loc(err: dict) -> str:
    return ".".join(str(p) for p in err.get("loc", ()) if p not in ("str", "list[TextPart]"))


def _bounded_int(digits: str) -> int:
    """Huge integer literals become one value past every bound, so the error names their field
    (Python refuses to convert more than 4300 digits, which would otherwise be a 500)."""
    return int(digits) if len(digits) <= 40 else 10**40


def parse_chat_request(raw: bytes, lim: Limits) -> dict:
    """Validate a request body and return the plain dict the deployments consume."""
    try:
        data = json.loads(raw, parse_int=_bounded_int)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ApiError(400, f"We could not parse the JSON body of your request: {e.msg if hasattr(e, 'msg') else e}",
                       "invalid_json") from None
    except RecursionError:
        raise ApiError(400, "The JSON body is nested too deeply.", "invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "The request body must be a JSON object.", "invalid_json")
    try:
        req = ChatRequest.model_validate(data)
    except RecursionError:
        raise ApiError(400, "The JSON body is nested too deeply.", "invalid_json") from None
    except ValidationError as e:
        err = e.errors(include_url=False, include_input=False)[0]
        param = _loc(err)
        raise ApiError(400, f"Invalid value for '{param}': {err['msg']}", "invalid_value", param) from None
    if req.model != lim.model:
        raise ApiError(404, f"The model '{req.model}' does not exist; this server serves '{lim.model}'.",
                       "model_not_found", "model")
    if not req.messages:
        raise ApiError(400, "'messages' must contain at least one message.", "invalid_value", "messages")
    if len(req.messages) > lim.max_messages:
        raise ApiError(400, f"'messages' has {len(req.messages)} items; at most {lim.max_messages} are allowed.",
                       "too_many_messages", "messages")
    stops = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    if len(stops) > 4 or any(not s or len(s) > STOP_CHARS for s in stops):
        raise ApiError(400, f"'stop' takes up to 4 non-empty strings of at most {STOP_CHARS} characters.",
                       "invalid_value", "stop")
    max_tokens = req.max_completion_tokens or req.max_tokens or lim.default_max_tokens
    if max_tokens > lim.max_tokens_limit:
        raise ApiError(400, f"'max_tokens' is {max_tokens}; at most {lim.max_tokens_limit} are allowed.",
                       "invalid_value", "max_tokens")
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()} for m in req.messages]
    # The operator's prompt always leads; a client system message comes after it and cannot replace it.
    if lim.system_prompt:
        messages.insert(0, {"role": "system", "content": lim.system_prompt})
    return {"messages": messages, "temperature": req.temperature, "top_p": req.top_p, "top_k": req.top_k,
            "max_tokens": max_tokens, "stop": stops, "seed": req.seed, "stream": req.stream,
            "include_usage": bool(req.stream_options and req.stream_options.include_usage)}


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def completion(rid: str, model: str, text: str, finish_reason: str, use: dict, guardrails: dict) -> dict:
    refused = finish_reason == "content_filter"
    return {
        "id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": finish_reason, "logprobs": None,
                     "message": {"role": "assistant", "content": text, "refusal": text if refused else None}}],
        "usage": use, "guardrails": guardrails,
    }


def chunk(rid: str, model: str, delta: dict, finish_reason: str | None = None, **extra) -> str:
    """One server-sent event carrying a chat.completion.chunk."""
    body = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}], **extra}
    return f"data: {json.dumps(body)}\n\n"


def sse_error(err: dict) -> str:
    return f"data: {json.dumps(err)}\n\n"


SSE_DONE = "data: [DONE]\n\n"
