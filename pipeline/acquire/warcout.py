"""Writing fetched pages as gzipped WARC 1.0 files (warcinfo, request + response records).

    from pipeline.acquire.warcout import WarcSink
    with WarcSink(RunDir("runs/x"), "crawl", prefix="crawl") as sink:
        sink.write_exchange(url, request_line, request_headers, status_line, response_headers, body, date)

Files rotate at `max_bytes` (Common Crawl's are ~1 GB), named
PREFIX-00000.warc.gz, ..., and are written through the run directory's fsspec
filesystem, so `s3://` run dirs work. Each response record carries
`WARC-Concurrent-To` pointing at its request, and a payload digest.
"""

from __future__ import annotations

import io
from email.utils import parsedate_to_datetime

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

from pipeline.runfs import RunDir


def _warc_date(http_date: str) -> str:
    try:
        return parsedate_to_datetime(http_date).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (TypeError, ValueError):
        return ""


class WarcSink:
    def __init__(self, run: RunDir, folder: str, prefix: str = "crawl", max_bytes: int = 1 << 30,
                 software: str = "data2dialogue crawler"):
        self.run, self.folder, self.prefix = run, folder, prefix
        self.max_bytes = max_bytes
        self.software = software
        self.paths: list[str] = []
        self.records = 0
        self._f = None
        self._writer = None

    def __enter__(self) -> WarcSink:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open_next(self) -> None:
        self.close()
        rel = f"{self.folder}/{self.prefix}-{len(self.paths):05d}.warc.gz"
        self.run.makedirs(self.folder)
        self._f = self.run.fs.open(self.run.path(rel), "wb")
        self._writer = WARCWriter(self._f, gzip=True)
        self.paths.append(self.run.path(rel))
        info = self._writer.create_warcinfo_record(
            rel.rsplit("/", 1)[-1], {"software": self.software, "format": "WARC File Format 1.0"})
        self._writer.write_record(info)

    def write_exchange(self, url: str, request_line: str, request_headers: list[tuple[str, str]],
                       status_line: str, response_headers: list[tuple[str, str]], body: bytes,
                       fetched_at: str = "") -> None:
        if self._f is None or self._f.tell() >= self.max_bytes:
            self._open_next()
        w = self._writer
        date = _warc_date(fetched_at)
        extra = {"WARC-Date": date} if date else {}
        req = w.create_warc_record(
            url, "request", payload=io.BytesIO(b""), length=0, warc_headers_dict=dict(extra),
            http_headers=StatusAndHeaders(request_line, request_headers, is_http_request=True))
        resp = w.create_warc_record(
            url, "response", payload=io.BytesIO(body), length=len(body),
            warc_headers_dict={**extra, "WARC-Concurrent-To": req.rec_headers.get_header("WARC-Record-ID")},
            http_headers=StatusAndHeaders(status_line, response_headers, protocol="HTTP/1.1"))
        w.write_record(req)
        w.write_record(resp)
        self.records += 2

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = self._writer = None
