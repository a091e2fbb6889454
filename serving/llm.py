"""The LLM deployment: a Hugging Face causal-LM folder behind Ray Serve, continuously batched.

    serve run serving.app:build_app model=runs/demo/sft guards=false   # (see app.py)

Every request, streaming or not, goes to one `Batcher` (serving/batcher.py) in
front of the project's one sampler (`pipeline.engine.Engine`): it
joins the running batch at the next decode step, so concurrent requests share
forward passes (each keeps its own sampling settings and seed) and leave as soon
as they finish. With `dynamic_batching` off the engine decodes one request at a
time. All torch work runs on one worker thread: the replica's event loop stays
free to take requests and to pass stream deltas on, and the model never sees two
callers at once.

Requests and results are plain dicts, so the ingress in front of this one (which
also runs the guard chains) handles them without importing torch.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from ray import serve

from pipeline.engine import Engine, RequestError, Sampling
from serving.batcher import Batcher
from serving.config import ServeConfig


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
        import torch

        if self.cfg.torch_threads:
            torch.set_num_threads(self.cfg.torch_threads)
        self.gen = Engine.load(self.cfg.model, self.cfg.context_length, self.cfg.device)
        if not getattr(self.gen.tok, "chat_template", None):
            raise ValueError("model: the tokenizer has no chat template; serve an SFT model folder")
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm")
        batching = self.cfg.dynamic_batching
        self.engine = Batcher(self.gen, self.cfg.max_batch_size if batching else 1,
                              self.cfg.batch_wait_timeout_s if batching else 0.0, pool)

    def info(self) -> dict:
        import torch

        return {"context_length": self.gen.context_length, "device": str(self.gen.device),
                "torch_threads": torch.get_num_threads(), "max_rows": self.engine.max_rows,
                "forward_passes": self.engine.passes, "row_steps": self.engine.row_steps}

    async def complete(self, req: dict) -> dict:
        """One chat completion: {"text", "finish_reason", "prompt_tokens", "completion_tokens"} or {"error"}."""
        slot = self.engine.submit(self.gen.encode(req["messages"]), _sampling(req))
        try:
            row = await slot.result()
        except RequestError as e:
            return request_error(e)
        finally:
            self.engine.cancel(slot)  # no-op once finished; stops the row if the caller went away
        return {"text": row.text, "finish_reason": row.finish_reason,
                "prompt_tokens": row.prompt_len, "completion_tokens": len(row.ids)}

    async def stream(self, req: dict):
        """Yield {"delta": text} items, then one final {"finish_reason", token counts} (or one {"error"})."""
        slot = self.engine.submit(self.gen.encode(req["messages"]), _sampling(req), stream=True)
        try:
            async for delta in slot.deltas():
                yield {"delta": delta}
        except RequestError as e:
            yield request_error(e)
            return
        finally:
            self.engine.cancel(slot)
        row = slot.row
        yield {"finish_reason": row.finish_reason, "prompt_tokens": row.prompt_len,
               "completion_tokens": len(row.ids)}
