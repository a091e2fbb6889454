"""The LLM deployment: a Hugging Face causal-LM folder behind Ray Serve, batched and streaming.

    serve run serving.app:build_app model=runs/demo/sft guards=false   # (see app.py)

Non-streaming requests go through `@serve.batch`, so concurrent requests share
forward passes (each keeps its own sampling settings and seed). Streaming requests
decode one by one, a step at a time, and yield text deltas. All torch work runs on
one worker thread: the replica's event loop stays free to gather the next batch and
to interleave streams, and the model never sees two callers at once.

Requests and results are plain dicts, so every deployment in front of this one
(OutputGuard, the ingress) can pass them along without importing torch.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from serving.config import ServeConfig
from serving.generate import ChatGenerator, RequestError, Sampling


def _sampling(req: dict) -> Sampling:
    stop = req.get("stop") or []
    return Sampling(
        max_tokens=req["max_tokens"], temperature=req.get("temperature", 1.0),
        top_p=req.get("top_p", 1.0), top_k=req.get("top_k", 0),
        stop=[stop] if isinstance(stop, str) else list(stop), seed=req.get("seed"),
    )


def request_error(e: RequestError) -> dict:
    return {"error": {"message": str(e), "type": "invalid_request_error", "param": e.param, "code": e.code}}


@serve.deployment(name="LLM")
class LLM:
    def __init__(self, cfg: dict):
        self.cfg = ServeConfig(**cfg)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        if self.cfg.torch_threads:
            import torch

            torch.set_num_threads(self.cfg.torch_threads)
        self.gen = ChatGenerator.load(self.cfg.model, self.cfg.context_length, self.cfg.device)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm")
        size = self.cfg.max_batch_size if self.cfg.dynamic_batching else 1
        self._batched.set_max_batch_size(size)
        self._batched.set_batch_wait_timeout_s(self.cfg.batch_wait_timeout_s if size > 1 else 0.0)
        self.batch_sizes: list[int] = []

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    def info(self) -> dict:
        return {"context_length": self.gen.context_length, "device": self.gen.device,
                "batch_sizes": list(self.batch_sizes[-1000:])}

    def _prepare(self, req: dict) -> tuple[list[int], Sampling]:
        prompt = self.gen.encode(req["messages"])
        return prompt, self.gen.check(prompt, _sampling(req))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def _batched(self, reqs: list[dict]) -> list[dict]:
        self.batch_sizes.append(len(reqs))
        results: list[dict | None] = [None] * len(reqs)
        prompts, samplings, slots = [], [], []
        for i, req in enumerate(reqs):
            try:
                p, s = self._prepare(req)
            except RequestError as e:
                results[i] = request_error(e)
                continue
            prompts.append(p)
            samplings.append(s)
            slots.append(i)
        if prompts:
            started = time.perf_counter()
            rows = await self._run(self.gen.generate, prompts, samplings)
            ms = (time.perf_counter() - started) * 1000
            for i, row in zip(slots, rows, strict=True):
                results[i] = {"text": row.text, "finish_reason": row.finish_reason,
                              "prompt_tokens": row.prompt_len, "completion_tokens": len(row.ids),
                              "generate_ms": round(ms, 2), "batch_size": len(rows)}
        return results

    async def complete(self, req: dict) -> dict:
        """One chat completion: {"text", "finish_reason", "prompt_tokens", "completion_tokens"} or {"error"}."""
        return await self._batched(req)

    async def stream(self, req: dict):
        """Yield {"delta": text} items, then one final {"finish_reason", token counts} (or one {"error"})."""
        try:
            prompt, s = self._prepare(req)
        except RequestError as e:
            yield request_error(e)
            return
        decode = await self._run(self.gen.start, [prompt], [s])
        while not decode.done:
            (delta,) = await self._run(decode.step)
            if delta:
                yield {"delta": delta}
        row = decode.rows[0]
        yield {"finish_reason": row.finish_reason, "prompt_tokens": row.prompt_len,
               "completion_tokens": len(row.ids)}
