"""`d2d crawl`: a polite crawler on Ray that writes what it fetches as WARC files.

    d2d crawl --seeds seeds.txt --run-dir runs/x --max-pages 200 --max-depth 2

One Ray actor per host (`HostFetcher`: robots.txt, Crawl-delay, pacing, one
connection pool), so a slow host never stalls the others; the driver keeps each
host's FIFO frontier, hands URLs to its actor up to `per_host_concurrency` at a
time, and collects results with `ray.wait` as they come. Links are followed only
to the seeds' hosts (never anywhere else), and with `same_domain` only within the
page's own host. Redirects are followed by the crawler, one hop at a time, under
the same rule. A host that resolves to a loopback, private or link-local address
is refused (reason private_address) unless `allow_private_hosts`; a page that fails
in any other way is counted under its reason and the crawl goes on. Output under RUN/crawl/: crawl-NNNNN.warc.gz (warcinfo, request and
response records of every page kept), fetch_log.jsonl (one row per URL tried, with
its reason) and stats.json (counts by reason).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from dataclasses import dataclass
from typing import ClassVar

from pipeline.acquire.warcout import WarcSink
from pipeline.acquire.web import FetchResult, HostFetcher, host_key, normalise_url
from pipeline.errors import StageError
from pipeline.runfs import RunDir


@dataclass(kw_only=True)
class CrawlConfig:
    seeds: str = ""
    """Seeds file: one http(s) URL a line, `#` comments. Only the seeds' hosts are ever contacted."""
    run_dir: str = "runs/default"
    """Run directory; output goes to RUN/crawl/."""
    user_agent: str = "d2d-bot/0.1 (+https://github.com/data2dialogue; research crawler)"
    """User-Agent header; its product token (before '/') is matched against robots.txt groups."""
    max_pages: int = 100
    """Most page requests in the whole crawl (robots.txt fetches not counted)."""
    max_depth: int = 2
    """Link hops from a seed (seeds are depth 0; redirects keep the depth)."""
    same_domain: bool = True
    """Follow a link only to the host of the page it is on; false also allows other seeds' hosts."""
    per_host_delay_s: float = 1.0
    """Minimum seconds from the end of one request to one host to the start of the next; a larger robots.txt Crawl-delay wins."""
    max_crawl_delay_s: float = 30.0
    """Hosts whose Crawl-delay is longer than this are skipped (reason crawl_delay_too_long)."""
    per_host_concurrency: int = 1
    """Requests in flight to one host at a time."""
    max_hosts_active: int = 4
    """Host actors alive at once (each is a process); more hosts wait their turn."""
    actor_num_cpus: float = 0.1
    """CPUs reserved per host actor (fetching is I/O-bound)."""
    timeout_s: float = 10.0
    """Per-request connect/read timeout, and the cap on reading one whole page."""
    max_page_bytes: int = 2_000_000
    """Larger pages are dropped (reason too_large), without reading past the cap."""
    content_types: list[str] = dataclasses.field(default_factory=lambda: ["text/html", "application/xhtml+xml"])
    """MIME types kept; any other is skipped (reason non_html)."""
    max_redirects: int = 5
    """Redirect hops followed from one URL."""
    obey_robots: bool = True
    """Fetch and obey robots.txt. Turn off only for sites you own."""
    warc_max_bytes: int = 1 << 30
    """Start a new WARC file once the current one reaches this size."""
    allow_private_hosts: bool = False
    """Contact hosts that resolve to loopback, private or link-local addresses (checked after DNS; reason private_address). Only for your own test servers."""

    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"max_pages": 20, "max_depth": 1, "per_host_delay_s": 0.2},
        "site": {"max_pages": 5000, "max_depth": 5, "per_host_concurrency": 2},
    }

    def __post_init__(self):
        for name in ("max_pages", "per_host_concurrency", "max_hosts_active", "max_page_bytes", "warc_max_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_depth", "max_redirects"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        for name in ("per_host_delay_s", "max_crawl_delay_s", "actor_num_cpus"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {self.timeout_s}")
        if not self.user_agent.strip():
            raise ValueError("user_agent must not be empty")
        if not self.content_types:
            raise ValueError("content_types must name at least one MIME type")


def read_seeds(path: str) -> tuple[list[str], list[str]]:
    """(valid normalised seed URLs in file order, bad lines)."""
    import fsspec

    try:
        with fsspec.open(path, "r", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (FileNotFoundError, OSError) as e:
        raise StageError(f"seeds file {path!r} cannot be read: {e}") from None
    good, bad = [], []
    for line in lines:
        line = line.split("#", 1)[0].strip() if not line.strip().startswith("http") else line.strip()
        if not line:
            continue
        url = normalise_url(line)
        (good if url else bad).append(url or line)
    return list(dict.fromkeys(good)), bad


@dataclass
class _Item:
    url: str
    depth: int
    hops: int = 0


class _Frontier:
    """Per-host FIFO queues, the set of URLs ever queued, and the hosts allowed."""

    def __init__(self, seeds: list[str], cfg: CrawlConfig):
        self.cfg = cfg
        self.allowed_hosts = {host_key(s) for s in seeds}
        self.queues: dict[str, collections.deque[_Item]] = collections.defaultdict(collections.deque)
        self.seen: set[str] = set()
        self.offsite = 0
        for s in seeds:
            self.add(s, 0)

    def add(self, url: str, depth: int, from_url: str | None = None, hops: int = 0) -> bool:
        host = host_key(url)
        if host not in self.allowed_hosts or (
            self.cfg.same_domain and from_url is not None and host != host_key(from_url)
        ):
            self.offsite += 1
            return False
        if url in self.seen:
            return False
        self.seen.add(url)
        self.queues[host].append(_Item(url, depth, hops))
        return True


def _log_row(res: FetchResult, depth: int) -> dict:
    return {"url": res.url, "host": host_key(res.url), "depth": depth, "reason": res.reason,
            "status": res.status, "content_type": res.content_type, "bytes": res.nbytes,
            "seconds": res.seconds, "waited_s": round(res.waited_s, 4), "location": res.location,
            "links": len(res.links), "fetched_at": res.fetched_at}


def run(cfg: CrawlConfig) -> dict:
    import ray

    if not cfg.seeds:
        raise StageError("no seeds: pass --seeds FILE (one URL a line)")
    seeds, bad_seeds = read_seeds(cfg.seeds)
    if not seeds:
        raise StageError(f"seeds file {cfg.seeds!r} has no http(s) URL")
    run_dir = RunDir(cfg.run_dir)
    started = time.time()
    frontier = _Frontier(seeds, cfg)
    Fetcher = ray.remote(HostFetcher).options(num_cpus=cfg.actor_num_cpus,
                                                max_concurrency=cfg.per_host_concurrency)
    actors: dict[str, object] = {}
    robots_cache: dict[str, dict] = {}
    inflight: dict = {}  # ObjectRef -> (host, item)
    per_host_inflight: collections.Counter = collections.Counter()
    reasons: collections.Counter = collections.Counter({"bad_seed": len(bad_seeds)} if bad_seeds else {})
    log = [{"url": s, "reason": "bad_seed"} for s in bad_seeds]
    requested = 0

    def start_actor(host: str):
        cached = robots_cache.get(host)
        actors[host] = Fetcher.remote(
            host, user_agent=cfg.user_agent, delay_s=cfg.per_host_delay_s, timeout_s=cfg.timeout_s,
            max_page_bytes=cfg.max_page_bytes, content_types=tuple(cfg.content_types),
            max_crawl_delay_s=cfg.max_crawl_delay_s, robots=cfg.obey_robots,
            robots_text=cached["text"] if cached and cached["status"] == "ok" else None,
            allow_private=cfg.allow_private_hosts)

    def retire_actors(all_of_them: bool = False):
        for host in [h for h in actors if all_of_them or (not frontier.queues[h] and not per_host_inflight[h])]:
            try:
                robots_cache.setdefault(host, ray.get(actors[host].robots_info.remote()))
            except Exception as e:  # noqa: BLE001 - a dead actor has no robots.txt to report
                robots_cache.setdefault(host, {"status": "error", "text": "", "error": type(e).__name__})
            ray.kill(actors.pop(host))

    with WarcSink(run_dir, "crawl", max_bytes=cfg.warc_max_bytes) as sink:
        while True:
            retire_actors()
            for host, queue in frontier.queues.items():
                if not queue or requested >= cfg.max_pages:
                    continue
                if host not in actors:
                    if len(actors) >= cfg.max_hosts_active:
                        continue
                    start_actor(host)
                while queue and per_host_inflight[host] < cfg.per_host_concurrency and requested < cfg.max_pages:
                    item = queue.popleft()
                    inflight[actors[host].fetch.remote(item.url)] = (host, item)
                    per_host_inflight[host] += 1
                    requested += 1
            if not inflight:
                break
            done, _ = ray.wait(list(inflight), num_returns=1)
            host, item = inflight.pop(done[0])
            per_host_inflight[host] -= 1
            try:
                res: FetchResult = ray.get(done[0])
            except Exception as e:  # noqa: BLE001 - the actor died or raised: count it, go on
                cause = getattr(e, "cause", None) or e
                res = FetchResult(item.url, f"error:{type(cause).__name__}")
                if isinstance(e, ray.exceptions.RayActorError) and host in actors:
                    ray.kill(actors.pop(host))  # the next URL of this host gets a fresh actor
            reasons[res.reason] += 1
            log.append(_log_row(res, item.depth))
            if res.reason == "ok":
                sink.write_exchange(res.url, res.request_line, res.request_headers, res.status_line,
                                    res.response_headers, res.body, res.fetched_at)
                if item.depth < cfg.max_depth:
                    for link in res.links:
                        frontier.add(link, item.depth + 1, from_url=res.url)
            elif res.reason == "redirect" and res.location:
                if item.hops >= cfg.max_redirects:
                    reasons["too_many_redirects"] += 1
                else:
                    frontier.add(res.location, item.depth, from_url=res.url, hops=item.hops + 1)
        retire_actors(all_of_them=True)
        warcs = list(sink.paths)
        pages_kept = sink.records // 2

    unfetched = sum(len(q) for q in frontier.queues.values())
    stats = {
        "seeds": len(seeds), "hosts": sorted(frontier.allowed_hosts), "requests": requested,
        "pages_kept": pages_kept, "by_reason": dict(sorted(reasons.items())),
        "offsite_links_skipped": frontier.offsite, "left_in_frontier": unfetched,
        "robots": {h: {k: v for k, v in r.items() if k != "text"} for h, r in sorted(robots_cache.items())},
        "seconds": round(time.time() - started, 2), "warcs": warcs,
    }
    log_path = run_dir.write_text("crawl/fetch_log.jsonl", "".join(_json(r) + "\n" for r in log))
    stats_path = run_dir.write_json("crawl/stats.json", stats)
    return {"artifacts": [*warcs, log_path, stats_path], "pages_kept": pages_kept,
            "requests": requested, "by_reason": stats["by_reason"], "seconds": stats["seconds"]}


def _json(row: dict) -> str:
    import json

    return json.dumps(row, sort_keys=True, default=str)


def crawl_seeds(seeds_path: str, run_dir: str, cfg: CrawlConfig | dict | None = None) -> list[str]:
    """Crawl `seeds_path` into RUN_DIR/crawl/ and return the WARC paths (for `d2d curate --input seeds.txt`).

    `cfg` is a CrawlConfig or a dict of its fields; seeds and run_dir given here win.
    """
    if isinstance(cfg, CrawlConfig):
        base = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
    else:
        base = dict(cfg or {})
    base.update(seeds=str(seeds_path), run_dir=str(run_dir))
    out = run(CrawlConfig(**base))
    return [p for p in out["artifacts"] if p.endswith(".warc.gz")]
