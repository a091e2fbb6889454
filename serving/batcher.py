"""Continuous batching in front of `pipeline.engine.Engine`: requests join the running batch between decode steps.

    batcher = Batcher(Engine.load("runs/demo/sft"), max_rows=16, wait_s=0.01, pool=ThreadPoolExecutor(1))
    row = await batcher.submit(prompt_ids, Sampling(max_tokens=32)).result()

asyncio in front, torch on one worker thread. The loop takes every waiting
request (up to `max_rows` live rows), prefills them together, merges them into
the running batch and steps all rows at once; finished rows leave at once. When
the model is idle it waits up to `wait_s` for a batch to fill before starting.
`max_rows=1` decodes one request at a time (dynamic batching off).

Failures stay with their request: one that cannot be prepared (prompt too long,
unusable seed) is rejected at `submit` and never joins a batch; a row whose
sampling or decoding raises ends with its error while its batch mates go on. Only
a failed forward pass, which no row can be blamed for, fails the whole batch.

This replaces `@serve.batch` for the LLM deployment: in Ray 2.60 it closes the
next batch `batch_wait_timeout_s` after its first request even while the previous
batch still runs, so under steady load batches stayed at 1-2 requests and
requests that arrived during a batch waited for all of it.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from concurrent.futures import Executor

from pipeline.engine import Decode, Engine, Row, Sampling

log = logging.getLogger("ray.serve")


class Slot:
    """One request in the engine: its final Row (or error) and, when streaming, its text deltas."""

    def __init__(self, stream: bool):
        self.stream = stream
        self.row: Row | None = None
        self._events: asyncio.Queue = asyncio.Queue()

    def _put(self, item):
        self._events.put_nowait(item)

    async def result(self) -> Row:
        """The finished row (text, ids, finish_reason); raises RequestError or the row's error."""
        while True:
            item = await self._events.get()
            if isinstance(item, Row):
                return item
            if isinstance(item, BaseException):
                raise item

    async def deltas(self):
        """Text deltas as they become final; ends when the row finishes (then see `row`)."""
        while True:
            item = await self._events.get()
            if isinstance(item, BaseException):
                raise item
            if isinstance(item, Row):
                return
            yield item


class Batcher:
    def __init__(self, engine: Engine, max_rows: int, wait_s: float, pool: Executor):
        self.engine, self.max_rows, self.wait_s, self.pool = engine, max_rows, wait_s, pool
        self.pending: deque[Slot] = deque()
        self.decode: Decode | None = None
        self.slots: dict[int, Slot] = {}
        """id(row) -> its request, for rows in `decode`."""
        self.passes = self.row_steps = 0
        """Forward passes run (prefills and decode steps) and rows they carried: their ratio is the mean batch."""
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def submit(self, prompt: list[int], sampling: Sampling, stream: bool = False) -> Slot:
        """Queue one request; one that cannot be prepared gets its RequestError at once, alone."""
        slot = Slot(stream)
        try:
            slot.row = self.engine.prepare(prompt, sampling)
        except Exception as e:  # noqa: BLE001 - the request's own fault: it never meets a batch
            slot._put(e)
            return slot
        self.pending.append(slot)
        if self._task is None or self._task.done():
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        self._wake.set()
        return slot

    def cancel(self, slot: Slot):
        """The client is gone: drop the request, or stop decoding its row at the next step."""
        if slot.row is not None:
            slot.row.cancelled = True

    def _live(self) -> int:
        return len(self.decode.rows) if self.decode is not None else 0

    async def _gather(self):
        """Idle: wait for a request, then up to `wait_s` for the batch to fill."""
        while not self.pending:
            self._wake.clear()
            await self._wake.wait()
        deadline = asyncio.get_running_loop().time() + self.wait_s
        while len(self.pending) < self.max_rows:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), left)
            except TimeoutError:
                break

    def _take(self) -> list[Slot]:
        if self.decode is not None and not self.decode.mergeable:
            return []  # this model's cache cannot take new rows: they wait for the batch to end
        take = []
        while self.pending and self._live() + len(take) < self.max_rows:
            slot = self.pending.popleft()
            if not slot.row.cancelled:
                take.append(slot)
        return take

    def _tick(self, take: list[Slot]) -> list[tuple[Row, str]]:
        """Worker thread: one decode step for the running rows, then prefill `take` and merge it in."""
        out: list[tuple[Row, str]] = []
        if self.decode is not None:
            rows = list(self.decode.rows)
            self.passes, self.row_steps = self.passes + 1, self.row_steps + len(rows)
            out += zip(rows, self.decode.step(), strict=True)
        if take:
            new = self.engine.start([s.row for s in take])
            self.slots.update((id(s.row), s) for s in take)
            self.passes, self.row_steps = self.passes + 1, self.row_steps + len(take)
            out += zip(list(new.rows), new.step(), strict=True)
            self.decode = new if self.decode is None or self.decode.done else self.decode.merge(new)
        if self.decode is not None and self.decode.done:
            self.decode = None
        return out

    async def _loop(self):
        loop = asyncio.get_running_loop()
        while True:
            if self.decode is None:
                await self._gather()
            take = self._take()
            try:
                out = await loop.run_in_executor(self.pool, self._tick, take)
            except Exception as e:  # noqa: BLE001 - fail this batch's requests, keep serving the next
                log.warning("decode failed: %s", type(e).__name__)
                for slot in [*self.slots.values(), *take]:
                    slot._put(e)
                self.slots.clear()
                self.decode = None
                continue
            for row, delta in out:
                slot = self.slots.get(id(row))
                if slot is None:
                    continue
                if delta and slot.stream:
                    slot._put(delta)
                if not row.live:
                    del self.slots[id(row)]
                    slot._put(row.error if row.error is not None else row)
