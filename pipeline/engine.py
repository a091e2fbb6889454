"""The one sampler: batched KV-cache decoding that RL rollouts, evaluation, the chat CLI and serving call.

    PYTHONPATH=. python -m pipeline.engine runs/demo/sft "Hi there"      # one streamed reply

`Engine` wraps a causal LM (and, for text, its tokenizer). `prepare` turns one
request into a `Row` (context check, clamped `max_tokens`, its own seeded
generator): a request that cannot be prepared fails alone, before it meets any
batch. `start(rows)` makes a `Decode`, a left-padded batch (token ids, attention
mask, per-row position ids, the KV cache); `Decode.step()` is one forward pass for
every row and one batched sampling call with per-row temperature, top-k, top-p
and seed, returning each row's new final text. Finished rows leave at once, cache
columns no row attends to are trimmed, and `merge()` joins a freshly prefilled
batch between steps (continuous batching, used by serving/batcher.py).

Device: every tensor is made on the model's device (generators too), logits stay
there; per step only the sampled ids (and log-probs when asked) reach the host,
since EOS, stop strings and streaming are decided there. Rows keep the log-prob of
each sampled token under the temperature-scaled distribution, which is what PPO
and GRPO recompute during the update. Stop strings are matched on decoded text,
and a stream never shows text that may turn out to be the start of a stop string.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


class RequestError(ValueError):
    """A request this model cannot serve (e.g. prompt longer than the context): the client's 400."""

    def __init__(self, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


class RowError(RuntimeError):
    """Sampling or decoding one row failed; that row ended, its batch mates went on."""


@dataclass
class Sampling:
    max_tokens: int = 128
    temperature: float = 1.0
    """0 = greedy."""
    top_p: float = 1.0
    top_k: int = 0
    """0 = no top-k cut."""
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def default_dtype(device) -> torch.dtype:
    """bf16 on a GPU (half the memory and bandwidth), fp32 on the CPU (bf16 matmuls are slow there)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def stop_split(text: str, stops: list[str]) -> tuple[int, bool]:
    """(how much of `text` is final, whether a stop string ended it).

    Text that could still grow into a stop string is held back; a stop string and
    what follows it are cut.
    """
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    if cut >= 0:
        return cut, True
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    safe = len(text) - hold
    # A trailing U+FFFD is half a multi-byte character still being decoded.
    while safe > 0 and text[safe - 1] == "\ufffd":
        safe -= 1
    return safe, False


def sample_rows(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                u: torch.Tensor, *, cut: bool = True, logprobs: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(token [rows], log-prob [rows]) for `logits` [rows, vocab], each row under its own settings.

    Inverse-CDF sampling on uniforms `u` [rows]; every tensor stays on the logits'
    device. `cut=False` promises no row uses top-k/top-p and skips the sort. The
    log-prob is of the temperature-scaled distribution before the top-k/top-p cut
    (None with `logprobs=False`).
    """
    vocab = logits.shape[-1]
    greedy = temperature <= 0
    scaled = logits.float() / torch.where(greedy, 1e-6, temperature)[:, None]
    best = scaled.argmax(-1)
    x, order = scaled, None
    if cut:
        x, order = torch.sort(scaled, dim=-1, descending=True)
        k = torch.where((top_k > 0) & (top_k < vocab), top_k, vocab)
        x = x.masked_fill(torch.arange(vocab, device=logits.device)[None, :] >= k[:, None], float("-inf"))
    probs = torch.softmax(x, dim=-1)
    if cut:
        probs = probs.masked_fill(torch.cumsum(probs, -1) - probs > top_p[:, None], 0.0)
    cdf = torch.cumsum(probs, dim=-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
    tok = idx.clamp(max=vocab - 1)
    if order is not None:
        tok = order.gather(1, tok[:, None])[:, 0]
    # Rounding can put u at the very top of the CDF: fall back to the most likely token.
    tok = torch.where(greedy | (idx >= vocab), best, tok)
    return tok, torch.log_softmax(scaled, -1).gather(1, tok[:, None])[:, 0] if logprobs else None


@dataclass(eq=False)
class Row:
    prompt: list[int]
    sampling: Sampling
    ids: list[int] = field(default_factory=list)
    """Sampled tokens, without the stop token."""
    logprobs: list[float] = field(default_factory=list)
    """One per sampled token, the stop token included (only when the batch asked for them)."""
    stop_token: int | None = None
    text: str = ""
    """Final text so far (stop strings cut, held-back tail excluded); only with a tokenizer."""
    finish_reason: str | None = None
    """"stop", "length" or "error" (then see `error`)."""
    error: BaseException | None = None
    gen: torch.Generator | None = None
    cancelled: bool = False
    """Set by the caller (client gone): the row leaves the batch at the next step."""

    @property
    def prompt_len(self) -> int:
        return len(self.prompt)

    @property
    def live(self) -> bool:
        return not (self.finish_reason or self.cancelled)

    def fail(self, e: BaseException):
        self.finish_reason, self.error = "error", RowError(f"{type(e).__name__}: {e}")


class Engine:
    """A model (and optional tokenizer) that samples batches of rows; see the module docstring."""

    def __init__(self, model, tok=None, *, eos_ids=None, pad_id: int | None = None, context_length: int = 0):
        self.model, self.tok = model, tok
        self.device = next(model.parameters()).device
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 2048)
        self.context_length = min(context_length, limit) if context_length else limit
        if pad_id is None:
            pad_id = tok.pad_token_id if tok is not None and tok.pad_token_id is not None else None
            pad_id = pad_id if pad_id is not None else (getattr(tok, "eos_token_id", None) or 0)
        self.pad_id = pad_id
        self.eos_ids = set(eos_ids) if eos_ids is not None else self._eos_ids()
        # Prefill needs the last position's logits only, not [rows, prompt, vocab].
        self._fwd_extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}

    @classmethod
    def load(cls, folder: str, context_length: int = 0, device: str = "auto", eos_ids=None) -> Engine:
        from transformers import AutoModelForCausalLM

        from pipeline.tokenizer import load_tokenizer

        device = default_device() if device == "auto" else device
        tok = load_tokenizer(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=default_dtype(device)).to(device).eval()
        return cls(model, tok, eos_ids=eos_ids, context_length=context_length)

    def _eos_ids(self) -> set[int]:
        ids = set()
        gen_cfg = getattr(self.model, "generation_config", None)
        for v in (getattr(self.tok, "eos_token_id", None), getattr(gen_cfg, "eos_token_id", None)):
            ids.update(v if isinstance(v, list) else [v] if v is not None else [])
        vocab = self.tok.get_vocab() if self.tok is not None else {}
        ids.update(vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>") if t in vocab)
        return ids

    def encode(self, messages: list[dict]) -> list[int]:
        """Prompt ids ending in the assistant header; control tokens only from the template, never typed text."""
        from pipeline.tokenizer import render_chat

        return render_chat(self.tok, messages, add_generation_prompt=True)

    def prepare(self, prompt: list[int], s: Sampling) -> Row:
        """One request as a Row, or RequestError: context checked, max_tokens clamped, its seed applied."""
        if not prompt:
            raise RequestError("The prompt is empty.", "invalid_value", "messages")
        room = self.context_length - len(prompt)
        if room < 1:
            raise RequestError(f"This model's maximum context length is {self.context_length} tokens; "
                               f"the messages use {len(prompt)}.", "context_length_exceeded", "messages")
        if s.stop and self.tok is None:
            raise RequestError("Stop strings need a tokenizer.", "invalid_value", "stop")
        if s.max_tokens < 1:
            raise RequestError(f"max_tokens must be at least 1, got {s.max_tokens}.", "invalid_value", "max_tokens")
        if s.max_tokens > room:
            s = Sampling(**{**s.__dict__, "max_tokens": room})
        gen = None
        if s.seed is not None:
            try:
                gen = torch.Generator(device=self.device).manual_seed(s.seed)
            except (RuntimeError, ValueError, OverflowError, TypeError) as e:
                raise RequestError(f"seed {s.seed!r} is not usable: {e}", "invalid_value", "seed") from None
        return Row(prompt=list(prompt), sampling=s, gen=gen)

    def start(self, rows: list[Row], *, logprobs: bool = False, generator: torch.Generator | None = None) -> Decode:
        """A batch of prepared rows; unseeded rows draw from `generator` (moved to the model's device)."""
        if generator is not None and generator.device != self.device:
            # Derived deterministically from the caller's generator, so a CPU generator seeds GPU sampling.
            seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
            generator = torch.Generator(device=self.device).manual_seed(seed)
        return Decode(self, rows, logprobs=logprobs, generator=generator)

    def generate(self, prompts: list[list[int]], samplings: list[Sampling], **kw) -> list[Row]:
        """Every prompt to its end, batched; `kw` as for `start`."""
        rows = [self.prepare(p, s) for p, s in zip(prompts, samplings, strict=True)]
        if not rows:
            return []
        d = self.start(rows, **kw)
        while not d.done:
            d.step()
        return rows

    def stream(self, prompt: list[int], s: Sampling) -> Iterator[str]:
        """One reply's final text as it grows (the chat CLI, `d2d generate`); raises the row's error."""
        d = self.start([self.prepare(prompt, s)])
        row = d.rows[0]
        while not d.done:
            (delta,) = d.step()
            if delta:
                yield delta
        if row.error is not None:
            raise row.error


def _cache_layers(cache) -> list | None:
    """The cache's per-layer key/value holders when they can be sliced and padded, else None."""
    from transformers.cache_utils import DynamicLayer

    layers = getattr(cache, "layers", None)
    if not layers or any(type(layer) is not DynamicLayer or not layer.is_initialized for layer in layers):
        return None
    return layers


class Decode:
    """A batch being generated: the rows still running, their KV cache and the next step's inputs.

    Invariant between steps: `mask` is [rows, cache length + 1] (the extra column is
    `_input`, the token each row sampled last and the model has not seen yet); the
    per-row sampling tensors line up with `rows`.
    """

    def __init__(self, e: Engine, rows: list[Row], *, logprobs: bool = False, generator=None):
        self.e, self.rows, self.logprobs, self.generator = e, list(rows), logprobs, generator
        dev = e.device
        width = max(r.prompt_len for r in rows)
        ids = [[e.pad_id] * (width - r.prompt_len) + r.prompt for r in rows]
        mask = [[0] * (width - r.prompt_len) + [1] * r.prompt_len for r in rows]
        self._input = torch.tensor(ids, dtype=torch.long, device=dev)
        self.mask = torch.tensor(mask, dtype=torch.long, device=dev)
        self._pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        s = [r.sampling for r in rows]
        self.temp = torch.tensor([x.temperature for x in s], dtype=torch.float32, device=dev)
        self.top_k = torch.tensor([x.top_k for x in s], dtype=torch.long, device=dev)
        self.top_p = torch.tensor([x.top_p for x in s], dtype=torch.float32, device=dev)
        self.cache = None

    @property
    def done(self) -> bool:
        return not any(r.live for r in self.rows)

    @property
    def mergeable(self) -> bool:
        """Whether other batches can join this one (a plain dynamic KV cache, already prefilled)."""
        return self.cache is not None and _cache_layers(self.cache) is not None

    def _uniforms(self) -> torch.Tensor:
        dev, n = self.e.device, len(self.rows)
        if all(r.gen is None for r in self.rows):
            return torch.rand(n, device=dev, generator=self.generator)
        u = []
        for r in self.rows:
            try:
                u.append(torch.rand(1, device=dev, generator=r.gen if r.gen is not None else self.generator))
            except Exception as err:  # noqa: BLE001 - this row's generator is broken: end it alone
                r.fail(err)
                u.append(torch.zeros(1, device=dev))
        return torch.cat(u)

    def _sample(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        u = self._uniforms()
        cut = any(0 < r.sampling.top_k or r.sampling.top_p < 1.0 for r in self.rows)
        try:
            return sample_rows(logits, self.temp, self.top_k, self.top_p, u, cut=cut, logprobs=self.logprobs)
        except Exception:  # noqa: BLE001 - find the row that broke the batch; the others go on
            toks, lps = [], []
            for i, r in enumerate(self.rows):
                one = slice(i, i + 1)
                try:
                    t, lp = sample_rows(logits[one], self.temp[one], self.top_k[one], self.top_p[one], u[one])
                except Exception as err:  # noqa: BLE001
                    r.fail(err)
                    t, lp = logits[one].argmax(-1), torch.zeros(1, device=logits.device)
                toks.append(t)
                lps.append(lp)
            return torch.cat(toks), torch.cat(lps)

    @torch.inference_mode()
    def step(self) -> list[str]:
        """One forward pass and one token for every running row; return each row's new final text.

        The returned list lines up with `rows` as they were before the call; rows
        that finished (or were cancelled, or failed) are gone from `rows` afterwards.
        """
        out = self.e.model(input_ids=self._input, attention_mask=self.mask, position_ids=self._pos,
                           past_key_values=self.cache, use_cache=True, **self.e._fwd_extra)
        self.cache = out.past_key_values
        toks, lps = self._sample(out.logits[:, -1, :])
        host = toks.tolist()
        host_lp = lps.tolist() if self.logprobs else [None] * len(host)
        deltas = []
        for r, t, lp in zip(self.rows, host, host_lp, strict=True):
            try:
                deltas.append(self._advance(r, t, lp) if r.live else "")
            except Exception as err:  # noqa: BLE001 - e.g. a malformed stop string: this row only
                r.fail(err)
                deltas.append("")
        keep = [i for i, r in enumerate(self.rows) if r.live]
        if len(keep) < len(self.rows):
            self._select(keep)
            if keep:
                toks = toks[torch.tensor(keep, device=toks.device)]
        self._input = toks[:, None] if keep else toks[:0, None]
        self._pos = self._pos[:, -1:] + 1
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(keep), 1)], dim=1)
        self._trim()
        return deltas

    def _select(self, keep: list[int]):
        """Drop every row not in `keep` from the batch, its sampling tensors and its cache."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = None
            self.mask, self._pos = self.mask[:0], self._pos[:0]
            return
        idx = torch.tensor(keep, device=self.mask.device)
        self.mask, self._pos = self.mask[idx], self._pos[idx]
        self.temp, self.top_k, self.top_p = self.temp[idx], self.top_k[idx], self.top_p[idx]
        self.cache.batch_select_indices(idx)

    def _trim(self):
        """Cut leading cache columns that every row masks out (padding of rows that have left)."""
        layers = _cache_layers(self.cache) if self.rows else None
        if layers is None:
            return
        used = self.mask.any(dim=0).nonzero()
        cut = int(used[0]) if len(used) else 0
        if cut:
            self.mask = self.mask[:, cut:]
            for layer in layers:
                layer.keys, layer.values = layer.keys[..., cut:, :], layer.values[..., cut:, :]

    def merge(self, other: Decode) -> Decode:
        """Join `other` (prefilled: stepped at least once) into this batch; both must be `mergeable`."""
        if not other.rows:
            return self
        if not self.rows:
            return other
        mine, theirs = _cache_layers(self.cache), _cache_layers(other.cache)
        if mine is None or theirs is None:
            raise ValueError("merge: both batches need a plain dynamic KV cache")
        width = max(self.mask.shape[1], other.mask.shape[1])
        # Left-pad the narrower batch: its extra columns are masked out, like prompt padding.
        grow_a, grow_b = width - self.mask.shape[1], width - other.mask.shape[1]
        for la, lb in zip(mine, theirs, strict=True):
            la.keys = torch.cat([F.pad(la.keys, (0, 0, grow_a, 0)), F.pad(lb.keys, (0, 0, grow_b, 0))])
            la.values = torch.cat([F.pad(la.values, (0, 0, grow_a, 0)), F.pad(lb.values, (0, 0, grow_b, 0))])
        self.mask = torch.cat([F.pad(self.mask, (grow_a, 0)), F.pad(other.mask, (grow_b, 0))])
        self._pos = torch.cat([self._pos, other._pos])
        self._input = torch.cat([self._input, other._input])
        self.temp, self.top_k, self.top_p = (torch.cat([a, b]) for a, b in (
            (self.temp, other.temp), (self.top_k, other.top_k), (self.top_p, other.top_p)))
        self.rows = self.rows + other.rows
        return self

    def _advance(self, r: Row, tok: int, logprob: float | None) -> str:
        if logprob is not None:
            r.logprobs.append(logprob)
        before = len(r.text)
        if tok in self.e.eos_ids:
            r.finish_reason, r.stop_token = "stop", tok
            if self.e.tok is not None:
                # No stop string matched before EOS, so any held-back tail is final text.
                r.text = self.e.tok.decode(r.ids, skip_special_tokens=True)
            return r.text[before:]
        r.ids.append(tok)
        if self.e.tok is None:
            if len(r.ids) >= r.sampling.max_tokens:
                r.finish_reason = "length"
            return ""
        full = self.e.tok.decode(r.ids, skip_special_tokens=True)
        end, stopped = stop_split(full, r.sampling.stop)
        if stopped:
            r.finish_reason = "stop"
        elif len(r.ids) >= r.sampling.max_tokens:
            r.finish_reason, end = "length", len(full)
        r.text = full[:end]
        return r.text[before:]


if __name__ == "__main__":
    eng = Engine.load(sys.argv[1])
    for piece in eng.stream(eng.encode([{"role": "user", "content": " ".join(sys.argv[2:]) or "Hi"}]),
                            Sampling(max_tokens=64, temperature=0.7, top_p=0.95)):
        print(piece, end="", flush=True)
    print()
