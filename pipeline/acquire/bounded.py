"""Bounded HTTP content decoding: gzip, deflate and brotli bodies undone without ever holding more than a cap.

    .venv/bin/python -c "import gzip; from pipeline.acquire.bounded import decode_body; \
print(decode_body([gzip.compress(b'x' * 10**9 // 1000)], 'gzip', 10**6))"

A few KB of gzip expand to MBs (ratio ~1000:1) and a few hundred bytes of brotli to
GBs, so a size check on the stored record says nothing about the decoded body.
`BodyDecoder.feed` asks every decompressor for at most the bytes still allowed
(zlib's `max_length`, brotli's `output_buffer_limit`) and raises `DecodedTooLarge`
the moment the output passes the cap: memory stays O(cap + chunk) and time
O(cap), whatever the ratio. Unknown codings pass through unchanged (httpx does the same).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable


class DecodedTooLarge(Exception):
    """The decoded body passed the cap; `.encoding` names the coding that expanded."""

    def __init__(self, encoding: str, limit: int):
        super().__init__(f"{encoding or 'identity'} body decodes to more than {limit} bytes")
        self.encoding = encoding
        self.limit = limit


class _Zlib:
    def __init__(self, gzip: bool):
        self.gzip = gzip
        self.d = zlib.decompressobj(16 + zlib.MAX_WBITS if gzip else zlib.MAX_WBITS)
        self.raw_tried = gzip

    def feed(self, data: bytes, room: int) -> list[bytes]:
        out = []
        while data:
            try:
                piece = self.d.decompress(data, room + 1)
            except zlib.error:
                if self.raw_tried:
                    raise
                # "deflate" in the wild is often a raw stream without the zlib header.
                self.raw_tried = True
                self.d = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self.raw_tried = True
            out.append(piece)
            room -= len(piece)
            if room < 0:
                return out
            if self.d.unconsumed_tail:
                data = self.d.unconsumed_tail
            elif self.d.eof and self.d.unused_data.strip(b"\0"):
                data = self.d.unused_data  # a multi-member gzip stream: the next member follows
                self.d = zlib.decompressobj(16 + zlib.MAX_WBITS if self.gzip else zlib.MAX_WBITS)
            else:
                data = b""
        return out


class _Brotli:
    def __init__(self):
        import brotli

        self.d = brotli.Decompressor()

    def feed(self, data: bytes, room: int) -> list[bytes]:
        out = [self.d.process(data, output_buffer_limit=room + 1)]
        room -= len(out[-1])
        # Once the output buffer filled up, brotli wants empty calls until it has drained.
        while room >= 0 and not self.d.can_accept_more_data():
            piece = self.d.process(b"", output_buffer_limit=room + 1)
            if not piece:
                break
            out.append(piece)
            room -= len(piece)
        return out


def _stage(coding: str):
    if coding in ("gzip", "x-gzip"):
        return _Zlib(gzip=True)
    if coding == "deflate":
        return _Zlib(gzip=False)
    if coding == "br":
        return _Brotli()
    return None


class BodyDecoder:
    """Incremental decoder of one Content-Encoding value (`gzip`, `br`, `gzip, br`, ...), capped at `limit` bytes.

    `feed(chunk)` returns the decoded bytes of the chunk; raises DecodedTooLarge past
    the cap, and zlib.error / brotli.error on a corrupt stream.
    """

    def __init__(self, content_encoding: str, limit: int):
        codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
        # Codings are listed in the order applied: undo them last-first.
        self.stages = [(c, s) for c in reversed(codings) if (s := _stage(c)) is not None]
        self.limit = limit
        self.total = 0

    @property
    def identity(self) -> bool:
        return not self.stages

    def feed(self, chunk: bytes) -> bytes:
        pieces = [chunk]
        for coding, stage in self.stages:
            nxt: list[bytes] = []
            for p in pieces:
                nxt += stage.feed(p, self.limit - self.total - sum(map(len, nxt)))
                if self.total + sum(map(len, nxt)) > self.limit:
                    raise DecodedTooLarge(coding, self.limit)
            pieces = nxt
        data = b"".join(pieces)
        self.total += len(data)
        if self.total > self.limit:
            raise DecodedTooLarge("", self.limit)
        return data


def decode_body(chunks: Iterable[bytes], content_encoding: str, limit: int) -> bytes:
    """All of `chunks` decoded, or DecodedTooLarge once more than `limit` bytes come out."""
    dec = BodyDecoder(content_encoding, limit)
    return b"".join(dec.feed(c) for c in chunks)
