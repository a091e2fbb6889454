"""The HTTP ingress: OpenAI-compatible chat completions (+SSE), models, health, the chat page.

    curl -H "Authorization: Bearer $KEY" -H "Content-Type: application/json" \
         http://127.0.0.1:8000/v1/chat/completions \
         -d '{"model": "sft", "messages": [{"role": "user", "content": "Hi"}]}'

Order of checks: Host header (400) -> failed-key throttle per client address (429) ->
API key (401) -> rate limit (429 + Retry-After) -> media type (415) -> body size (413,
before reading) and body deadline (408) -> JSON and schema (400, unknown model 404) ->
input guards -> generation under the request deadline (408) -> output guards. Every
error, 5xx included, is OpenAI-shaped JSON. Failures of the LLM replica become 503 with
Retry-After; the ingress keeps serving. The guard chains run here (serving/guards.py).
Logs carry request ids, key ids (hash prefixes), sizes and timings; with `log_content`
also the user's messages after input redaction, never system or assistant text.
"""

import asyncio
import logging
import math
import secrets
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

from serving.admission import RateLimiter, check_host, check_json, key_hash, read_body
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


@app.exception_handler(Exception)
async def _server_error(_req: Request, e: Exception):
    log.error("unhandled %s", type(e).__name__)  # the type only: the message may quote the request
    return JSONResponse(error_body("The server failed on this request.", "server_error", None, "internal_error"),
                        status_code=500)


@serve.deployment(name="Ingress")
@serve.ingress(app)
class Ingress:
    def __init__(self, generator: DeploymentHandle, cfg: dict, key_limits: dict[str, int],
                 audit_secret: bytes | None = None):
        """`key_limits` maps sha256(key) -> requests per minute; plaintext keys never reach Serve."""
        self.cfg = ServeConfig(**cfg)
        self.gen, self.keys = generator, key_limits
        self.limiter = RateLimiter(max_clients=self.cfg.rate_limit_clients)
        self.failures = RateLimiter(max_clients=self.cfg.rate_limit_clients)
        self.hosts = self.cfg.host_names()
        self.model = self.cfg.served_name
        self.limits = Limits(self.model, self.cfg.max_messages, self.cfg.max_tokens_limit,
                             self.cfg.default_max_tokens, self.cfg.system_prompt)
        self.guards = None
        if self.cfg.guards:
            from serving.guards import Guards

            self.guards = Guards(self.cfg, audit_secret)

    # --- admission
    def _admit(self, request: Request) -> str:
        """Host, key and rate limit; returns the client id used in logs."""
        check_host(request, self.hosts)
        ip = "ip:" + (request.client.host if request.client else "?")
        if self.keys:
            per_fail = self.cfg.auth_failures_per_minute
            # Checked before the key, so a throttled guesser learns nothing from its next tries.
            wait = self.failures.peek(ip, per_fail)
            if wait:
                raise ApiError(429, f"Too many failed API keys from this address; retry in {wait:.0f}s.",
                               "too_many_auth_failures", headers={"Retry-After": str(math.ceil(wait))})
            auth = request.headers.get("authorization", "")
            key = auth[7:].strip() if auth[:7].lower() == "bearer " else ""
            h = key_hash(key) if key else ""
            if h not in self.keys:
                self.failures.acquire(ip, per_fail)
                raise ApiError(401, "Missing or invalid API key; send `Authorization: Bearer KEY`.",
                               "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
            client, per_minute = "key:" + h[:10], self.keys[h]
        else:
            client, per_minute = ip, self.cfg.rate_limit_per_minute
        wait = self.limiter.acquire(client, per_minute)
        if wait:
            raise ApiError(429, f"Rate limit of {per_minute} requests per minute reached; retry in {wait:.1f}s.",
                           "rate_limit_exceeded", headers={"Retry-After": str(math.ceil(wait))})
        return client

    # --- routes
    @app.get("/")
    def index(self, request: Request):
        check_host(request, self.hosts)
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz")
    def healthz(self):
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(self):
        try:
            info = await asyncio.wait_for(self.gen.info.remote(), 10)
        except Exception as e:  # noqa: BLE001 - any downstream failure means not ready
            raise ApiError(503, f"not ready: {type(e).__name__}", "not_ready", headers={"Retry-After": "1"}) from None
        return {"status": "ready", "model": self.model, "guards": self.guards is not None,
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
        check_json(request)
        raw = await read_body(request, self.cfg.max_body_bytes, self.cfg.body_timeout_s)
        req = parse_chat_request(raw, self.limits)
        rid = "chatcmpl-" + uuid.uuid4().hex[:24]
        req["request_id"] = rid
        deadline = time.monotonic() + self.cfg.request_timeout_s
        ctx, guard_in = None, None
        try:
            async with asyncio.timeout_at(asyncio.get_running_loop().time() + self.cfg.request_timeout_s):
                if self.guards is not None:
                    operator = bool(self.cfg.system_prompt)
                    allowed, req["messages"], guard_in = await self.guards.scan_input(req["messages"], rid, operator)
                    if not allowed:
                        return self._refused(rid, req, guard_in, client, started)
                    canary = self._plant_canary(req["messages"]) if operator else ""
                    ctx = self.guards.context(req["messages"], rid, canary)
                if req["stream"]:
                    return await self._stream(rid, req, guard_in, ctx, client, started, deadline)
                res = await self._call(self.gen.complete.remote(req))
                if "error" in res:
                    e = res["error"]
                    raise ApiError(400, e["message"], e["code"], e["param"])
                guard_out = None
                if ctx is not None:
                    from serving.guards import summary

                    r = await self.guards.scan_output(res["text"], ctx, rid)
                    if not r.allowed:
                        res.update(text=self.cfg.refusal_message, finish_reason="content_filter")
                    else:
                        res["text"] = r.sanitized_text
                    guard_out = summary([r])
        except TimeoutError:
            raise ApiError(408, f"The request took longer than {self.cfg.request_timeout_s:g} s.",
                           "request_timeout") from None
        guardrails = self._guardrails(guard_in, guard_out)
        self._log(rid, client, started, res["prompt_tokens"], res["completion_tokens"], guardrails, req, res["text"])
        return completion(rid, self.model, res["text"], res["finish_reason"],
                          usage(res["prompt_tokens"], res["completion_tokens"]), guardrails)

    # --- helpers
    @staticmethod
    def _plant_canary(messages: list[dict]) -> str:
        """A fresh token in the operator's system prompt: the leak guard blocks a reply quoting it."""
        canary = "d2d-" + secrets.token_hex(6)
        messages[0] = {**messages[0], "content": f"{messages[0]['content']}\n(ref {canary})"}
        return canary

    async def _call(self, response):
        try:
            return await response
        except (ApiError, TimeoutError, asyncio.CancelledError):
            raise
        except Exception as e:  # noqa: BLE001 - a dead or overloaded replica is the server's 503
            log.warning("downstream failure: %s", type(e).__name__)
            raise ApiError(503, "The model is temporarily unavailable; retry shortly.", "unavailable",
                           headers={"Retry-After": "1"}) from None

    def _guardrails(self, guard_in: dict | None, guard_out: dict | None) -> dict:
        return {"enabled": self.guards is not None, "input": guard_in, "output": guard_out}

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

    async def _stream(self, rid, req, guard_in, ctx, client, started, deadline):
        upstream = self.gen.options(stream=True).stream.remote(req)
        first = await self._call(upstream.__anext__())
        if "error" in first:
            e = first["error"]
            raise ApiError(400, e["message"], e["code"], e["param"])
        held = self.guards.hold_back(ctx) if ctx is not None else None

        async def events():
            yield chunk(rid, self.model, {"role": "assistant", "content": ""},
                        guardrails=self._guardrails(guard_in, None))
            item, parts = first, []
            try:
                while True:
                    if "delta" in item:
                        text = item["delta"]
                        if held is not None:
                            held.add(text)
                            text = await self.guards.run(held.check) if held.due() else ""
                        if text is None:
                            upstream.cancel()
                            yield from_block(held, 0, 0)
                            break
                        if text:
                            parts.append(text)
                            yield chunk(rid, self.model, {"content": text})
                    elif "error" in item:
                        yield sse_error(item)
                        break
                    else:
                        finish, guard_out = item["finish_reason"], None
                        if held is not None:
                            text = await self.guards.run(held.check, True)
                            self.guards.audit_results(rid, "output", held.results)
                            if text is None:
                                yield from_block(held, item.get("prompt_tokens", 0), item.get("completion_tokens", 0))
                                break
                            if text:
                                parts.append(text)
                                yield chunk(rid, self.model, {"content": text})
                            from serving.guards import summary

                            guard_out = summary(held.results)
                        guardrails = self._guardrails(guard_in, guard_out)
                        use = usage(item.get("prompt_tokens", 0), item.get("completion_tokens", 0))
                        yield chunk(rid, self.model, {}, finish, guardrails=guardrails, usage=use)
                        self._log(rid, client, started, use["prompt_tokens"], use["completion_tokens"],
                                  guardrails, req, "".join(parts))
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError
                    item = await asyncio.wait_for(upstream.__anext__(), left)
            except StopAsyncIteration:
                pass
            except TimeoutError:
                upstream.cancel()
                yield sse_error(error_body(f"The request took longer than {self.cfg.request_timeout_s:g} s.",
                                           "invalid_request_error", None, "request_timeout"))
            except Exception as e:  # noqa: BLE001 - headers are sent; report in-band and end the stream
                log.warning("%s stream failed: %s", rid, type(e).__name__)
                yield sse_error(error_body("The model failed while streaming; retry.", "server_error", None,
                                           "stream_interrupted"))
            yield SSE_DONE

        def from_block(held, prompt_tokens, completion_tokens):
            from serving.guards import summary

            self.guards.audit_results(rid, "output", held.results)
            redaction_reached_sent = held.results[-1].allowed
            guardrails = self._guardrails(guard_in, summary(held.results, held.blocked if redaction_reached_sent
                                                            else ""))
            self._log(rid, client, started, prompt_tokens, completion_tokens, guardrails, req, "")
            return (chunk(rid, self.model, {"refusal": self.cfg.refusal_message}) +
                    chunk(rid, self.model, {}, "content_filter", guardrails=guardrails,
                          usage=usage(prompt_tokens, completion_tokens)))

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"X-Request-ID": rid, "Cache-Control": "no-cache"})

    def _log(self, rid, client, started, prompt_tokens, completion_tokens, guardrails, req, text):
        g_in, g_out = guardrails.get("input") or {}, guardrails.get("output") or {}
        log.info("%s client=%s ms=%.1f prompt_tokens=%d completion_tokens=%d guard_in=%s guard_out=%s",
                 rid, client, (time.perf_counter() - started) * 1000, prompt_tokens, completion_tokens,
                 g_in.get("action", "-"), g_out.get("action", "-"))
        if self.cfg.log_content:
            # User messages only, after input redaction: system prompts (the operator's, its canary)
            # and assistant turns never reach a log, and raw PII the guard caught does not either.
            users = [m["content"] for m in req["messages"] if m["role"] == "user"]
            log.info("%s prompt=%r completion=%r", rid, users[-1:], text)
