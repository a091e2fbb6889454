"""KV-cache text generation for a batch of chat requests, each with its own sampling settings.

    gen = ChatGenerator.load("runs/demo/sft")
    [out] = gen.generate([gen.encode([{"role": "user", "content": "hi"}])], [Sampling(max_tokens=16)])

Pure torch + transformers (no Ray), so the LLM deployment stays thin and this is
testable alone. One `Decode` holds a left-padded batch and its KV cache; each
`step()` samples one token per row with that row's temperature, top-p, top-k and
seed, so requests with different settings share a forward pass. Stop strings are
matched on the decoded text, and a stream never shows text that may turn out to
be the start of a stop string.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


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


def sample(logits: torch.Tensor, s: Sampling, gen: torch.Generator | None) -> int:
    """One token id from a row of logits under `s`."""
    if s.temperature <= 0:
        return int(torch.argmax(logits))
    logits = logits.float() / s.temperature
    if 0 < s.top_k < logits.numel():
        kth = torch.topk(logits, s.top_k).values[-1]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    if s.top_p < 1.0:
        sorted_p, idx = torch.sort(probs, descending=True)
        drop = torch.cumsum(sorted_p, 0) - sorted_p > s.top_p
        sorted_p[drop] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, idx, sorted_p)
    return int(torch.multinomial(probs, 1, generator=gen))


@dataclass
class Row:
    sampling: Sampling
    prompt_len: int
    ids: list[int] = field(default_factory=list)
    text: str = ""
    """Final text so far (stop strings cut, held-back tail excluded)."""
    finish_reason: str | None = None
    gen: torch.Generator | None = None


class ChatGenerator:
    def __init__(self, model, tokenizer, context_length: int = 0, device: str = "cpu"):
        self.model, self.tok, self.device = model.eval(), tokenizer, device
        limit = getattr(model.config, "max_position_embeddings", None) or getattr(model.config, "n_positions", 2048)
        self.context_length = min(context_length, limit) if context_length else limit
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError("model: the tokenizer has no chat template; serve an SFT model folder")
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        self.eos_ids = self._eos_ids()

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
        text = self.tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tok(text, add_special_tokens=False)["input_ids"]

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
        while not d.done:
            d.step()
        return d.rows


class Decode:
    """One batch being generated: the KV cache and each row's progress."""

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
        self.pos = (self.mask.cumsum(-1) - 1).clamp(min=0)
        self.cache = None
        self._next_input = ids.to(g.device)
        self.done = False

    @torch.inference_mode()
    def step(self) -> list[str]:
        """Run one forward pass, sample a token for every unfinished row; return each row's new final text."""
        out = self.g.model(input_ids=self._next_input, attention_mask=self.mask,
                           position_ids=self.pos, past_key_values=self.cache, use_cache=True)
        self.cache = out.past_key_values
        logits = out.logits[:, -1, :].cpu()
        nxt, deltas = [], []
        for i, r in enumerate(self.rows):
            if r.finish_reason:
                nxt.append(self.g.pad_id)
                deltas.append("")
                continue
            tok = sample(logits[i], r.sampling, r.gen)
            nxt.append(tok)
            deltas.append(self._advance(r, tok))
        self.done = all(r.finish_reason for r in self.rows)
        live = torch.tensor([0 if r.finish_reason else 1 for r in self.rows], device=self.mask.device)
        self.mask = torch.cat([self.mask, live[:, None]], dim=1)
        self.pos = self.pos[:, -1:] + 1
        self._next_input = torch.tensor(nxt, device=self.mask.device)[:, None]
        return deltas

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
