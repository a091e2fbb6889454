"""The HTTP ingress: OpenAI-compatible chat completions (+SSE), models, health, the chat page.

    curl -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/v1/chat/completions \
         -d '{"model": "sft", "messages": [{"role": "user", "content": "Hi"}]}'

Order of checks: API key (401) -> per-key rate limit (429 + Retry-After) -> body
size (413) -> JSON and schema (400, unknown model 404). Failures of downstream
replicas become 503 with Retry-After; the ingress keeps serving. Logs carry request
ids, key ids (hash prefixes), sizes and timings; prompts only when `log_content`.
"""

import asyncio
import hashlib
import logging
import math
import time
import uuid
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.config import ServeConfig
from serving.schemas import (
    SSE_DONE,
    ApiError,
    Limits,
    chunk,
    completion,
    error_body,
    parse_chat_request,
    sse_error,
    usage,
)

log = logging.getLogger("ray.serve")
STATIC = Path(__file__).parent / "static"

app = FastAPI(title="data2dialogue", docs_url=None, redoc_url=None, openapi_url=None)
app.mount("/static", StaticFiles(directory=STATIC), name="static")


@app.exception_handler(ApiError)
async def _api_error(_req: Request, e: ApiError):
    return JSONResponse(e.body(), status_code=e.status, headers=e.headers)


@app.exception_handler(StarletteHTTPException)
async def _http_error(_req: Request, e: StarletteHTTPException):
    return JSONResponse(ApiError(e.status_code, str(e.detail)).body(), status_code=e.status_code)


@app.exception_handler(RequestValidationError)
async def _validation_error(_req: Request, e: RequestValidationError):
    return JSONResponse(error_body(str(e.errors()[:1]), "invalid_request_error"), status_code=400)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class RateLimiter:
    """Token bucket per client: `per_minute` requests, refilled continuously."""

    def __init__(self, clock=time.monotonic):
        self.clock, self.buckets = clock, {}

    def acquire(self, client: str, per_minute: int) -> float:
        """0 if admitted, else seconds until a request would be."""
        if per_minute <= 0:
            return 0.0
        now, rate = self.clock(), per_minute / 60.0
        tokens, last = self.buckets.get(client, (float(per_minute), now))
        tokens = min(float(per_minute), tokens + (now - last) * rate)
        if tokens >= 1.0:
            self.buckets[client] = (tokens - 1.0, now)
            return 0.0
        self.buckets[client] = (tokens, now)
        return (1.0 - tokens) / rate


async def read_body(request: Request, limit: int) -> bytes:
    """The body, or 413 as soon as it passes `limit` bytes (Content-Length is not trusted alone)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Request body is {declared} bytes; the limit is {limit}.", "request_too_large")
    body = bytearray()
    async for part in request.stream():
        body += part
        if len(body) > limit:
            raise ApiError(413, f"Request body exceeds the limit of {limit} bytes.", "request_too_large")
    return bytes(body)


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(self, generator: DeploymentHandle, input_guard: DeploymentHandle | None,
                 cfg: dict, key_limits: dict[str, int]):
        """`key_limits` maps sha256(key) -> requests per minute; plaintext keys never reach Serve."""
        self.cfg = ServeConfig(**cfg)
        self.gen, self.input_guard, self.keys = generator, input_guard, key_limits
        self.limiter = RateLimiter()
        self.model = self.cfg.served_name
        self.limits = Limits(self.model, self.cfg.max_messages, self.cfg.max_tokens_limit,
                             self.cfg.default_max_tokens, self.cfg.system_prompt)

    # --- admission
    def _admit(self, request: Request) -> str:
        """Authenticate and rate-limit; returns the client id used in logs."""
        if self.keys:
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            h = key_hash(key) if key else ""
            if h not in self.keys:
                raise ApiError(401, "Missing or invalid API key; send `Authorization: Bearer KEY`.",
                               "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            client, per_minute = "key:" + h[:10], self.keys[h]
        else:
            client, per_minute = "ip:" + (request.client.host if request.client else "?"), self.cfg.rate_limit_per_minute
        wait = self.limiter.acquire(client, per_minute)
        if wait:
            raise ApiError(429, f"Rate limit of {per_minute} requests per minute reached; retry in {wait:.1f}s.",
                           "rate_limit_exceeded", headers={"Retry-After": str(math.ceil(wait))})
        return client

    # --- routes
    @app.get("/")
    def index(self):
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    def healthz(self):
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self):
        try:
            info = await asyncio.wait_for(self.gen.info.remote(), 10)
            if self.input_guard is not None:
                await asyncio.wait_for(self.input_guard.ready.remote(), 10)
        except Exception as e:  # noqa: BLE001 - any downstream failure means not ready
            raise ApiError(503, f"not ready: {type(e).__name__}", "not_ready", headers={"Retry-After": "1"}) from None
        return {"status": "ready", "model": self.model, "guards": self.input_guard is not None,
                "context_length": info["context_length"]}

    @app.get("/v1/models")
    def models(self, request: Request):
        self._admit(request)
        return {"object": "list", "data": [{"id": self.model, "object": "model", "created": 0,
                                            "owned_by": "data2dialogue"}]}

    @app.post("/v1/chat/completions")
    async def chat(self, request: Request):
        started = time.perf_counter()
        client = self._admit(request)
        req = parse_chat_request(await read_body(request, self.cfg.max_body_bytes), self.limits)
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        req["request_id"] = rid
        guard_in = None
        if self.input_guard is not None:
            verdict = await self._call(self.input_guard.scan.remote(req["messages"], rid))
            guard_in = verdict["summary"]
            req["messages"] = verdict["messages"]
            if not verdict["allowed"]:
                return self._refused(rid, req, guard_in, client, started)
        if req["stream"]:
            return await self._stream(rid, req, guard_in, client, started)
        res = await self._call(self.gen.complete.remote(req))
        if "error" in res:
            e = res["error"]
            raise ApiError(400, e["message"], e["code"], e["param"])
        guardrails = self._guardrails(guard_in, res.get("guard"))
        self._log(rid, client, started, res["prompt_tokens"], res["completion_tokens"], guardrails, req, res["text"])
        return completion(rid, self.model, res["text"], res["finish_reason"],
                          usage(res["prompt_tokens"], res["completion_tokens"]), guardrails)

    # --- helpers
    async def _call(self, response):
        try:
            return await response
        except ApiError:
            raise
        except Exception as e:  # noqa: BLE001 - a dead or overloaded replica is the server's 503
            log.warning("downstream failure: %s", type(e).__name__)
            raise ApiError(503, "The model is temporarily unavailable; retry shortly.", "unavailable",
                           headers={"Retry-After": "1"}) from None

    def _guardrails(self, guard_in: dict | None, guard_out: dict | None) -> dict:
        return {"enabled": self.input_guard is not None, "input": guard_in, "output": guard_out}

    def _refused(self, rid, req, guard_in, client, started):
        text, guardrails = self.cfg.refusal_message, self._guardrails(guard_in, None)
        self._log(rid, client, started, 0, 0, guardrails, req, text)
        if not req["stream"]:
            return completion(rid, self.model, text, "content_filter", usage(0, 0), guardrails)

        async def events():
            yield chunk(rid, self.model, {"role": "assistant", "content": ""}, guardrails=guardrails)
            yield chunk(rid, self.model, {"refusal": text, "content": text})
            yield chunk(rid, self.model, {}, "content_filter", guardrails=guardrails, usage=usage(0, 0))
            yield SSE_DONE

        return StreamingResponse(events(), media_type="text/event-stream", headers={"X-Request-ID": rid})

    async def _stream(self, rid, req, guard_in, client, started):
        upstream = self.gen.options(stream=True).stream.remote(req)
        first = await self._call(upstream.__anext__())
        if "error" in first:
            e = first["error"]
            raise ApiError(400, e["message"], e["code"], e["param"])

        async def events():
            yield chunk(rid, self.model, {"role": "assistant", "content": ""},
                        guardrails=self._guardrails(guard_in, None))
            item, parts = first, []
            try:
                while True:
                    if "delta" in item:
                        parts.append(item["delta"])
                        yield chunk(rid, self.model, {"content": item["delta"]})
                    elif "error" in item:
                        yield sse_error(item)
                        break
                    else:
                        if item.get("refusal"):
                            yield chunk(rid, self.model, {"refusal": item["refusal"]})
                        guardrails = self._guardrails(guard_in, item.get("guard"))
                        use = usage(item.get("prompt_tokens", 0), item.get("completion_tokens", 0))
                        yield chunk(rid, self.model, {}, item["finish_reason"], guardrails=guardrails, usage=use)
                        self._log(rid, client, started, use["prompt_tokens"], use["completion_tokens"],
                                  guardrails, req, "".join(parts))
                        break
                    item = await upstream.__anext__()
            except StopAsyncIteration:
                pass
            except Exception as e:  # noqa: BLE001 - headers are sent; report in-band and end the stream
                log.warning("%s stream failed: %s", rid, type(e).__name__)
                yield sse_error(error_body("The model failed while streaming; retry.", "server_error", None,
                                           "stream_interrupted"))
            yield SSE_DONE

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"X-Request-ID": rid, "Cache-Control": "no-cache"})

    def _log(self, rid, client, started, prompt_tokens, completion_tokens, guardrails, req, text):
        g_in, g_out = guardrails.get("input") or {}, guardrails.get("output") or {}
        log.info("%s client=%s ms=%.1f prompt_tokens=%d completion_tokens=%d guard_in=%s guard_out=%s",
                 rid, client, (time.perf_counter() - started) * 1000, prompt_tokens, completion_tokens,
                 g_in.get("action", "-"), g_out.get("action", "-"))
        if self.cfg.log_content:
            # Messages here are after input redaction, so raw PII the guard caught never lands in logs.
            log.info("%s prompt=%r completion=%r", rid, req["messages"][-1]["content"], text)
