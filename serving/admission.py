"""What the ingress checks before it reads a request: Host, API key, rate limits, media type, body.

    from serving.admission import RateLimiter, host_allowed, read_body
    RateLimiter(max_clients=10_000).acquire("ip:10.0.0.7", per_minute=60)   # 0.0 = admitted

Pure (Starlette's Request only), so each rule is testable without Ray. The limits are
per ingress replica: with N replicas a client gets up to N times `per_minute` (see
docs/serving.md for a cluster-wide limit).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict

from starlette.requests import Request

from serving.schemas import ApiError


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class RateLimiter:
    """Token bucket per client: `per_minute` requests, refilled continuously.

    At most `max_clients` buckets are kept; the least recently seen is dropped first, so a
    flood of new client ids cannot grow the table without bound (a dropped client starts
    again with a full bucket, which is what an idle one would have anyway)."""

    def __init__(self, clock=time.monotonic, max_clients: int = 10_000):
        self.clock, self.max_clients = clock, max_clients
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def _tokens(self, client: str, per_minute: int, now: float) -> float:
        tokens, last = self.buckets.get(client, (float(per_minute), now))
        return min(float(per_minute), tokens + (now - last) * per_minute / 60.0)

    def _store(self, client: str, tokens: float, now: float) -> None:
        self.buckets[client] = (tokens, now)
        self.buckets.move_to_end(client)
        while len(self.buckets) > self.max_clients:
            self.buckets.popitem(last=False)

    def peek(self, client: str, per_minute: int) -> float:
        """Seconds until `client` would be admitted (0 = now), without spending a token."""
        if per_minute <= 0:
            return 0.0
        tokens = self._tokens(client, per_minute, self.clock())
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) * 60.0 / per_minute

    def acquire(self, client: str, per_minute: int) -> float:
        """0 if admitted (one token spent), else seconds until a request would be."""
        if per_minute <= 0:
            return 0.0
        now = self.clock()
        tokens = self._tokens(client, per_minute, now)
        if tokens >= 1.0:
            self._store(client, tokens - 1.0, now)
            return 0.0
        self._store(client, tokens, now)
        return (1.0 - tokens) * 60.0 / per_minute


def host_name(header: str) -> str:
    """`Host` header -> lower-case name without port or trailing dot ("[::1]:80" -> "::1")."""
    h = header.strip().lower()
    if h.startswith("["):
        h = h[1:h.find("]")] if "]" in h else ""
    elif h.count(":") == 1:
        h = h.split(":", 1)[0]
    return h.rstrip(".")


def check_host(request: Request, names: set[str]) -> None:
    """400 unless the Host header names this server: a DNS-rebinding page sends its own name."""
    if "*" in names:
        return
    name = host_name(request.headers.get("host", ""))
    if name not in names:
        raise ApiError(400, "The Host header does not name this server.", "invalid_host")


def check_json(request: Request) -> None:
    """415 unless the body is declared JSON: HTML forms and `text/plain` fetches skip CORS preflight."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise ApiError(415, "Send the request body as JSON with `Content-Type: application/json`.",
                       "unsupported_media_type")


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The body; 413 as soon as it passes `limit` bytes (Content-Length is not trusted alone),
    408 when it has not all arrived within `timeout_s` (a stalled client holds a slot)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"Request body is {declared} bytes; the limit is {limit}.", "request_too_large")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for part in request.stream():
                body += part
                if len(body) > limit:
                    raise ApiError(413, f"Request body exceeds the limit of {limit} bytes.", "request_too_large")
    except TimeoutError:
        raise ApiError(408, f"The request body did not arrive within {timeout_s:g} s.", "body_timeout") from None
    return bytes(body)
