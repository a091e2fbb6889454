"""KV-cache text generation with continuous batching: each row keeps its own sampling settings.

    gen = ChatGenerator.load("runs/demo/sft")
    [row] = gen.generate([gen.encode([{"role": "user", "content": "hi"}])], [Sampling(max_tokens=16)])

Pure torch + transformers (no Ray), so the LLM deployment stays thin and this is
testable alone. A `Decode` is a left-padded batch: token ids, attention mask,
per-row position ids and the KV cache. `step()` is one forward pass for every row
and one batched sampling call (temperature, top-k and top-p as per-row tensors;
a seeded row draws its random number from its own generator, so its reply does
not depend on its batch mates). After each step finished rows leave the batch and
cache columns no row attends to are trimmed; between steps `merge()` joins a
freshly prefilled batch, left-padding the shorter cache, so new requests need not
wait for the running ones (continuous batching). Stop strings are matched on the
decoded text, and a stream never shows text that may turn out to be the start of
a stop string.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


class RequestError(ValueError):
    """A request this model cannot serve (e.g. prompt longer than the context): the client's 400."""

    def __init__(self, message: str, code: str, param: str | None = None):
        super().__init__(message)
        self.code, self.param = code, param


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


def sample_rows(logits: torch.Tensor, samplings: list[Sampling], gens: list[torch.Generator | None]) -> list[int]:
    """One token id per row of `logits` [rows, vocab], each row under its own settings, in batched ops.

    Inverse-CDF sampling: row i's uniform number comes from `gens[i]` (or torch's
    global generator when None), everything else is one tensor op for all rows.
    """
    n, vocab = logits.shape
    best = torch.argmax(logits, dim=-1)
    temps = torch.tensor([s.temperature for s in samplings])
    greedy = temps <= 0
    if bool(greedy.all()):
        return best.tolist()
    x = logits.float() / torch.where(greedy, 1.0, temps)[:, None]
    ks = torch.tensor([s.top_k if 0 < s.top_k < vocab else vocab for s in samplings])
    ps = torch.tensor([s.top_p for s in samplings])
    order = None
    if bool((ks < vocab).any() or (ps < 1.0).any()):
        # Sort only when some row cuts: top-k, then top-p on the renormalised rest.
        x, order = torch.sort(x, dim=-1, descending=True)
        x = x.masked_fill(torch.arange(vocab)[None, :] >= ks[:, None], float("-inf"))
        probs = torch.softmax(x, dim=-1)
        probs = probs.masked_fill(torch.cumsum(probs, -1) - probs > ps[:, None], 0.0)
    else:
        probs = torch.softmax(x, dim=-1)
    u = torch.rand(n)
    for i, g in enumerate(gens):
        if g is not None:
            u[i] = torch.rand(1, generator=g)[0]
    cdf = torch.cumsum(probs, dim=-1)
    idx = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
    # Rounding can put u at the very top of the CDF: fall back to the most likely token.
    if order is not None:
        idx = order.gather(1, idx.clamp(max=vocab - 1)[:, None])[:, 0].where(idx < vocab, order[:, 0])
    else:
        idx = idx.where(idx < vocab, best)
    return torch.where(greedy, best, idx).tolist()


@dataclass(eq=False)
class Row:
    sampling: Sampling
    prompt_len: int
    ids: list[int] = field(default_factory=list)
    text: str = ""
    """Final text so far (stop strings cut, held-back tail excluded)."""
    finish_reason: str | None = None
    gen: torch.Generator | None = None
    cancelled: bool = False
    """Set by the caller (client gone): the row leaves the batch at the next step."""

    @property
    def live(self) -> bool:
        return not (self.finish_reason or self.cancelled)


class ChatGenerator:
    def __init__(self, model, tokenizer, context_length: int = 0, device: str = "cpu"):
        self.model, self.tok, self.device = model.eval(), tokenizer, device
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 2048)
        self.context_length = min(context_length, limit) if context_length else limit
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("model: the tokenizer has no chat template; serve an SFT model folder")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.eos_ids = self._eos_ids()
        # Prefill needs the last position's logits only, not [rows, prompt, vocab].
        self._fwd_extra = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}

    @classmethod
    def load(cls, folder: str, context_length: int = 0, device: str = "auto", dtype: str = "auto"):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_dtype = torch.bfloat16 if device == "cuda" and dtype == "auto" else torch.float32
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch_dtype).to(device)
        return cls(model, tok, context_length, device)

    def _eos_ids(self) -> set[int]:
        ids = set()
        for v in (self.tok.eos_token_id, getattr(self.model.generation_config, "eos_token_id", None)):
            ids.update(v if isinstance(v, list) else [v] if v is not None else [])
        vocab = self.tok.get_vocab()
        ids.update(vocab[t] for t in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<|endoftext|>") if t in vocab)
        return ids

    def encode(self, messages: list[dict]) -> list[int]:
        """Prompt ids; control tokens come only from the template, never from typed text."""
        from pipeline.tokenizer import render_chat

        return render_chat(self.tok, messages, add_generation_prompt=True)

    def check(self, prompt: list[int], s: Sampling) -> Sampling:
        """Enforce the context length: refuse a prompt that leaves no room, clamp max_tokens."""
        room = self.context_length - len(prompt)
        if room < 1:
            raise RequestError(
                f"This model's maximum context length is {self.context_length} tokens; "
                f"the messages use {len(prompt)}.", "context_length_exceeded", "messages")
        if s.max_tokens > room:
            s = Sampling(**{**s.__dict__, "max_tokens": room})
        return s

    def start(self, prompts: list[list[int]], samplings: list[Sampling]) -> Decode:
        return Decode(self, prompts, samplings)

    def generate(self, prompts: list[list[int]], samplings: list[Sampling]) -> list[Row]:
        d = self.start(prompts, samplings)
        rows = list(d.rows)
        while not d.done:
            d.step()
        return rows


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
    `_input`, the token each row sampled last and the model has not seen yet).
    """

    def __init__(self, g: ChatGenerator, prompts: list[list[int]], samplings: list[Sampling]):
        self.g = g
        self.rows = []
        for p, s in zip(prompts, samplings, strict=True):
            gen = torch.Generator().manual_seed(s.seed) if s.seed is not None else None
            self.rows.append(Row(sampling=g.check(p, s), prompt_len=len(p), gen=gen))
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), g.pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        self.mask = mask.to(g.device)
        self._pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self._input = ids.to(g.device)
        self.cache = None

    @property
    def done(self) -> bool:
        return not any(r.live for r in self.rows)

    @property
    def mergeable(self) -> bool:
        """Whether other batches can join this one (a plain dynamic KV cache, already prefilled)."""
        return self.cache is not None and _cache_layers(self.cache) is not None

    @torch.inference_mode()
    def step(self) -> list[str]:
        """One forward pass and one token for every running row; return each row's new final text.

        The returned list lines up with `rows` as they were before the call; rows
        that finished (or were cancelled) are gone from `rows` afterwards.
        """
        out = self.g.model(input_ids=self._input, attention_mask=self.mask, position_ids=self._pos,
                           past_key_values=self.cache, use_cache=True, **self.g._fwd_extra)
        self.cache = out.past_key_values
        toks = sample_rows(out.logits[:, -1, :].cpu(), [r.sampling for r in self.rows], [r.gen for r in self.rows])
        deltas = [self._advance(r, t) if r.live else "" for r, t in zip(self.rows, toks, strict=True)]
        keep = [i for i, r in enumerate(self.rows) if r.live]
        dev = self.mask.device
        if len(keep) < len(self.rows):
            self._select(keep)
            toks = [toks[i] for i in keep]
        self._input = torch.tensor(toks, dtype=torch.long, device=dev)[:, None]
        self._pos = self._pos[:, -1:] + 1
        self.mask = torch.cat([self.mask, torch.ones(len(keep), 1, dtype=self.mask.dtype, device=dev)], dim=1)
        self._trim()
        return deltas

    def _select(self, keep: list[int]):
        """Drop every row not in `keep` from the batch and its cache."""
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = None
            self.mask, self._pos = self.mask[:0], self._pos[:0]
            return
        idx = torch.tensor(keep, device=self.mask.device)
        self.mask, self._pos = self.mask[idx], self._pos[idx]
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
        self.rows = self.rows + other.rows
        return self

    def _advance(self, r: Row, tok: int) -> str:
        before = len(r.text)
        if tok in self.g.eos_ids:
            # No stop string matched before EOS, so any held-back tail is final text.
            r.finish_reason = "stop"
            r.text = self.g.tok.decode(r.ids, skip_special_tokens=True)
            return r.text[before:]
        r.ids.append(tok)
        full = self.g.tok.decode(r.ids, skip_special_tokens=True)
        end, stopped = stop_split(full, r.sampling.stop)
        if stopped:
            r.finish_reason = "stop"
        elif len(r.ids) >= r.sampling.max_tokens:
            r.finish_reason, end = "length", len(full)
        r.text = full[:end]
        return r.text[before:]
