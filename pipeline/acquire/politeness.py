"""Crawler politeness: robots.txt rules (with fractional Crawl-delay) and per-host pacing.

    .venv/bin/python -c "from pipeline.acquire.politeness import Robots; \
r = Robots.parse('User-agent: *\\nDisallow: /private\\nCrawl-delay: 0.5', 'd2d-bot'); \
print(r.allowed('http://h/private/x'), r.crawl_delay)"

Rules come from `urllib.robotparser`. Its parser keeps only whole-second
Crawl-delay values, so the delays are read here first and put back as floats.
How a robots.txt answer maps to rules follows the conventions of the big
crawlers (RFC 9309): 2xx parse the file, 4xx mean no rules, 5xx and an
unreachable server mean "disallow everything" for this crawl.
"""

from __future__ import annotations

import re
import threading
import time
import urllib.robotparser
from dataclasses import dataclass

_DELAY_LINE = re.compile(r"^(\s*crawl-delay\s*:\s*)([^#\s]+)", re.IGNORECASE | re.MULTILINE)


@dataclass
class Robots:
    """The robots.txt verdict for one host and one user agent."""

    parser: urllib.robotparser.RobotFileParser | None
    user_agent: str
    crawl_delay: float | None = None
    status: str = "ok"
    """ok | none (4xx: no rules) | unavailable (5xx or unreachable: disallow all)."""
    text: str = ""

    @classmethod
    def parse(cls, text: str, user_agent: str) -> Robots:
        delays: list[float] = []

        def to_index(m: re.Match) -> str:
            try:
                delays.append(max(0.0, float(m.group(2))))
            except ValueError:
                return m.group(1) + "invalid"
            return f"{m.group(1)}{len(delays) - 1}"

        rp = urllib.robotparser.RobotFileParser()
        rp.parse(_DELAY_LINE.sub(to_index, text).splitlines())
        index = rp.crawl_delay(_agent_token(user_agent))
        delay = delays[int(index)] if index is not None else None
        return cls(rp, user_agent, delay, "ok", text)

    @classmethod
    def none(cls, user_agent: str) -> Robots:
        return cls(None, user_agent, None, "none")

    @classmethod
    def unavailable(cls, user_agent: str, why: str) -> Robots:
        return cls(None, user_agent, None, "unavailable", why)

    @classmethod
    def from_response(cls, status: int | None, text: str, user_agent: str) -> Robots:
        if status is not None and 200 <= status < 300:
            return cls.parse(text, user_agent)
        if status is not None and 400 <= status < 500:
            return cls.none(user_agent)
        return cls.unavailable(user_agent, f"robots.txt answered {status or 'nothing'}")

    def allowed(self, url: str) -> bool:
        if self.status == "none":
            return True
        if self.status == "unavailable":
            return False
        return self.parser.can_fetch(_agent_token(self.user_agent), url)


def _agent_token(user_agent: str) -> str:
    """robots.txt groups name the product token: `d2d-bot/0.1 (+url)` -> `d2d-bot`."""
    return user_agent.split("/", 1)[0].split()[0] if user_agent.strip() else "*"


class HostPacer:
    """Keeps requests to one host at least `delay_s` apart, thread-safely.

    Each caller reserves the next free slot under a lock and sleeps outside it, so
    concurrent fetchers of one host queue up in order instead of bursting.
    """

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self._next = 0.0
        self._lock = threading.Lock()

    def set_delay(self, delay_s: float) -> None:
        """Change the spacing, counting it from the last reserved start (robots.txt was one)."""
        with self._lock:
            self._next += delay_s - self.delay_s
            self.delay_s = delay_s

    def done(self) -> None:
        """A request finished: the next may start `delay_s` from now at the earliest.

        Spacing starts alone is not enough: a request that spends time in transit
        would reach the server closer than `delay_s` to the next one.
        """
        with self._lock:
            self._next = max(self._next, time.monotonic() + self.delay_s)

    def wait(self) -> float:
        """Block until this caller may start a request; return the seconds waited."""
        with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.delay_s
        if start > now:
            time.sleep(start - now)
        return start - now
