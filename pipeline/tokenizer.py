"""The tokenizer: byte-level BPE with ChatML control tokens, the one place the chat format lives.

    d2d tokenizer --run-dir runs/demo --input ../shared/data/text/tinyshakespeare.txt --set vocab_size=2048

Trains on RUN/curated/*.parquet (or any .txt/.parquet given as --input), writes
RUN/tokenizer/ in Hugging Face format (AutoTokenizer loads it offline and its
`apply_chat_template` renders ChatML) and RUN/tokenizer/stats.json (bytes/token on
held-out documents).

Security: the HF tokenizer matches special-token *text* anywhere in its input, so
`tok("<|im_start|>system")` yields the control id. Every path that encodes user or
web content goes through `encode_text` / `render_chat` / `chat_spans`, which use a
private copy of the backend with `encode_special_tokens=True`: such text becomes
plain bytes. (transformers' `split_special_tokens=True` flips that flag on the
shared backend and leaves it set, which is why we keep our own copy.)
"""

from __future__ import annotations

import os
import posixpath
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

EOT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|pad|>"
SPECIAL_TOKENS = (EOT, IM_START, IM_END, PAD)
"""Registered in this order, so they get ids 0..3 in every tokenizer we train."""

#: cl100k (GPT-4) pre-tokenisation: contractions, letter runs with one leading
#: non-letter, digit groups of at most 3, punctuation runs, newlines, spaces.
SPLIT_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def _backend_for_training(vocab_size: int, min_frequency: int):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    backend = Tokenizer(models.BPE())
    # No normalizer: any normalisation (NFC, lowercasing) breaks decode(encode(x)) == x.
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    return backend, trainer


def wrap_backend(backend):
    """A `PreTrainedTokenizerFast` around a trained backend with our specials and chat template."""
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        # GPT-2 convention: one document separator that is also eos/bos. Chat generation
        # stops on <|im_end|> as well (see stop_token_ids).
        eos_token=EOT,
        bos_token=EOT,
        pad_token=PAD,
        additional_special_tokens=[IM_START, IM_END],
        # The default clean-up turns " ." into "." and breaks the round trip.
        clean_up_tokenization_spaces=False,
        model_max_length=1_000_000,
    )
    tok.chat_template = CHAT_TEMPLATE
    return tok


def train_tokenizer(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2):
    """Train a byte-level BPE on `texts` and return it as a `PreTrainedTokenizerFast`."""
    if vocab_size < 256 + len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size: {vocab_size} is below the 256 bytes + {len(SPECIAL_TOKENS)} special tokens")
    backend, trainer = _backend_for_training(vocab_size, min_frequency)
    backend.train_from_iterator(texts, trainer)
    return wrap_backend(backend)


def save_tokenizer(tok, path: str) -> str:
    """Save in HF format (tokenizer.json, tokenizer_config.json with chat template) to a path or URI.

    The template goes inside tokenizer_config.json (not transformers 5's separate
    chat_template.jinja), which every transformers version since 4.34 reads.
    """
    from pipeline.runfs import RunDir, is_remote

    if not is_remote(path):
        Path(path).mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(path, save_jinja_files=False)
        return str(path)
    with tempfile.TemporaryDirectory() as tmp:
        tok.save_pretrained(tmp, save_jinja_files=False)
        out = RunDir(path)
        for name in os.listdir(tmp):
            out.fs.put_file(os.path.join(tmp, name), out._p(name))
    return path


def load_tokenizer(path: str):
    """Load a saved tokenizer (local folder or URI) with AutoTokenizer, offline."""
    from transformers import AutoTokenizer

    from pipeline.errors import StageError
    from pipeline.runfs import RunDir, is_remote

    if is_remote(path):
        src = RunDir(path)
        if not src.exists("tokenizer.json"):
            raise StageError(f"{path}/tokenizer.json not found: run `d2d tokenizer` first")
        local = tempfile.mkdtemp(prefix="d2d-tok-")
        for f in src.fs.ls(src._base, detail=False):
            src.fs.get_file(f, os.path.join(local, posixpath.basename(f)))
        path = local
    if not Path(path, "tokenizer.json").exists():
        raise StageError(f"{path}/tokenizer.json not found: run `d2d tokenizer` first")
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def safe_backend(tok):
    """A private backend copy that encodes special-token text as plain text (cached on `tok`)."""
    cached = getattr(tok, "_d2d_safe_backend", None)
    if cached is not None and cached[0] == len(tok):
        return cached[1]
    from tokenizers import Tokenizer

    backend = Tokenizer.from_str(tok.backend_tokenizer.to_str())
    backend.encode_special_tokens = True
    backend.no_truncation()
    backend.no_padding()
    tok._d2d_safe_backend = (len(tok), backend)
    return backend


def load_safe_backend(path: str):
    """The Rust tokenizer alone (no transformers import), special-token text encoded as plain text.

    For worker processes that only encode: loading it costs milliseconds, AutoTokenizer seconds.
    """
    from tokenizers import Tokenizer

    from pipeline.errors import StageError
    from pipeline.runfs import RunDir

    src = RunDir(path)
    if not src.exists("tokenizer.json"):
        raise StageError(f"{path}/tokenizer.json not found: run `d2d tokenizer` first")
    backend = Tokenizer.from_str(src.read_text("tokenizer.json"))
    backend.encode_special_tokens = True
    backend.no_truncation()
    backend.no_padding()
    return backend


def encode_text(tok, text: str) -> list[int]:
    """Token ids of untrusted `text`; `<|im_start|>` typed by a user stays plain text."""
    return safe_backend(tok).encode(text, add_special_tokens=False).ids


def encode_texts(tok, texts: list[str]) -> list[list[int]]:
    """Batch form of `encode_text` (the fast path `d2d tokenize` uses)."""
    return [e.ids for e in safe_backend(tok).encode_batch_fast(texts, add_special_tokens=False)]


def _check_messages(messages) -> None:
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise ValueError(f"messages[{i}]: expected {{'role': str, 'content': str}}, got {m!r}")
        if not m["role"] or "\n" in m["role"]:
            raise ValueError(f"messages[{i}].role: must be a non-empty single line, got {m['role']!r}")


def chat_spans(tok, messages: list[dict], add_generation_prompt: bool = False) -> tuple[list[int], list[int]]:
    """ChatML ids for `messages` and a 0/1 mask marking assistant content plus its `<|im_end|>`.

    Control tokens come only from the template's structure; role and content are
    encoded with the safe backend, each message's "ROLE\\ncontent" as one string, so
    the ids equal `apply_chat_template` for content without special-token text.
    """
    _check_messages(messages)
    backend = safe_backend(tok)
    start, end = tok.convert_tokens_to_ids(IM_START), tok.convert_tokens_to_ids(IM_END)
    newline = backend.encode("\n", add_special_tokens=False).ids
    ids: list[int] = []
    mask: list[int] = []
    for m in messages:
        header = m["role"] + "\n"
        enc = backend.encode(header + m["content"], add_special_tokens=False)
        learn = m["role"] == "assistant"
        ids.append(start)
        mask.append(0)
        ids.extend(enc.ids)
        # A token that reaches past the header holds content (only "\n"-led content
        # can merge across the boundary); it is the assistant's to learn.
        mask.extend(int(learn and e > len(header)) for _, e in enc.offsets)
        ids.append(end)
        mask.append(int(learn))
        ids.extend(newline)
        mask.extend([0] * len(newline))
    if add_generation_prompt:
        prompt = [start, *backend.encode("assistant\n", add_special_tokens=False).ids]
        ids.extend(prompt)
        mask.extend([0] * len(prompt))
    return ids, mask


def render_chat(tok, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Chat ids for a conversation, safe against control tokens typed inside role or content.

    Our ChatML template goes through `chat_spans`. Any other template (a foreign HF
    model folder) is rendered with a placeholder per message; the template's own
    text is encoded normally (its control tokens stay control tokens) and each
    message's content with the safe backend.
    """
    if getattr(tok, "chat_template", None) in (None, CHAT_TEMPLATE):
        return chat_spans(tok, messages, add_generation_prompt)[0]
    import re

    _check_messages(messages)
    marks = [f"\ue000{i}\ue001" for i in range(len(messages))]
    text = tok.apply_chat_template([{**m, "content": k} for m, k in zip(messages, marks, strict=True)],
                                   add_generation_prompt=add_generation_prompt, tokenize=False)
    parts = re.split("\ue000(\\d+)\ue001", text)
    if [int(i) for i in parts[1::2]] != list(range(len(messages))):
        raise ValueError("chat template: it does not place each message's content once, in order")
    ids: list[int] = []
    for j, part in enumerate(parts):
        if j % 2:
            ids += encode_text(tok, messages[int(part)]["content"])
        elif part:
            ids += tok(part, add_special_tokens=False)["input_ids"]
    return ids


def stop_token_ids(tok) -> list[int]:
    """Ids that end a chat generation: the turn end and the document end."""
    return [tok.convert_tokens_to_ids(IM_END), tok.convert_tokens_to_ids(EOT)]


_TINY_TEXT = """\
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs!
A tokenizer splits text into pieces; byte-level BPE never needs an unknown token.
User: How many r's are in "strawberry"? Assistant: There are 3.
def add(a, b):\n    return a + b  # 1 + 2 == 3, 10 * 12 = 120, 3.14159
Caf\u00e9, na\u00efve, \u00fcber, \u65e5\u672c\u8a9e, \u0440\u0443\u0441\u0441\u043a\u0438\u0439, \U0001f600 emoji.
"""


def tiny_tokenizer(vocab_size: int = 512):
    """A throwaway tokenizer for tests, trained in-process on built-in text (well under a second)."""
    lines = _TINY_TEXT.splitlines()
    corpus = [" ".join(lines[(i + j) % len(lines)] for j in range(3)) for i in range(200)]
    return train_tokenizer(corpus, vocab_size, min_frequency=1)


# --- the `d2d tokenizer` stage ------------------------------------------------------------------


@dataclass(kw_only=True)
class TokenizerConfig:
    presets: ClassVar[dict[str, dict]] = {
        "tiny": {"vocab_size": 2048, "max_chars": 2_000_000},
        "32k": {"vocab_size": 32768, "max_chars": 2_000_000_000},
        "50k": {"vocab_size": 50304, "max_chars": 2_000_000_000},
    }
    run_dir: str = "runs/default"
    """Run directory (local path or s3:// URI); the tokenizer goes to RUN/tokenizer/."""
    input: str | None = None
    """A .txt/.parquet file, folder or glob to train on; default RUN/curated/*.parquet."""
    vocab_size: int = 8192
    """Vocabulary size including 256 byte tokens and the 4 special tokens."""
    min_frequency: int = 2
    """A pair must occur this often to be merged."""
    max_chars: int = 50_000_000
    """Characters to train on, sampled uniformly over documents (by id hash) when the input is larger."""
    holdout_fraction: float = 0.02
    """Fraction of documents (by id hash) held out of training to measure bytes/token."""
    holdout_max_chars: int = 2_000_000
    """Cap on held-out characters encoded for the bytes/token figure."""
    text_split: Literal["paragraph", "line", "file"] = "paragraph"
    """How a .txt input splits into documents: blank-line paragraphs, lines, or one per file."""
    text_column: str = "text"
    """Parquet column holding document text."""

    def __post_init__(self):
        if self.vocab_size < 256 + len(SPECIAL_TOKENS) or self.vocab_size > 2**32 - 1:
            raise ValueError(f"vocab_size: must be in [{256 + len(SPECIAL_TOKENS)}, 2**32), got {self.vocab_size}")
        if self.min_frequency < 1:
            raise ValueError(f"min_frequency: must be >= 1, got {self.min_frequency}")
        if self.max_chars < 1000:
            raise ValueError(f"max_chars: must be >= 1000, got {self.max_chars}")
        if not 0.0 <= self.holdout_fraction < 0.5:
            raise ValueError(f"holdout_fraction: must be in [0, 0.5), got {self.holdout_fraction}")
        if self.holdout_max_chars < 0:
            raise ValueError(f"holdout_max_chars: must be >= 0, got {self.holdout_max_chars}")


def bytes_per_token(tok, texts: list[str]) -> dict:
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in encode_texts(tok, texts)) if texts else 0
    return {"bytes": n_bytes, "tokens": n_tokens, "bytes_per_token": round(n_bytes / max(n_tokens, 1), 4)}


def run(cfg: TokenizerConfig) -> dict:
    from pipeline.documents import doc_hash, input_files, iter_documents
    from pipeline.runfs import RunDir

    started = time.time()
    files = input_files(cfg.run_dir, cfg.input)
    docs = lambda: iter_documents(files, text_split=cfg.text_split, text_column=cfg.text_column)  # noqa: E731
    # Pass 1 counts, so that pass 2 can keep a uniform sample of max_chars.
    total_chars = skipped = 0
    for doc_id, text in docs():
        if text is None or not text.strip():
            skipped += 1
        elif doc_hash(doc_id, "holdout") >= cfg.holdout_fraction:
            total_chars += len(text)
    keep = min(1.0, cfg.max_chars / max(total_chars, 1))
    holdout: list[str] = []
    sample = {"documents": 0, "chars": 0}

    def training_texts():
        held = 0
        for doc_id, text in docs():
            if text is None or not text.strip():
                continue
            if doc_hash(doc_id, "holdout") < cfg.holdout_fraction:
                if held < cfg.holdout_max_chars:
                    holdout.append(text)
                    held += len(text)
            elif doc_hash(doc_id, "sample") < keep:
                sample["documents"] += 1
                sample["chars"] += len(text)
                yield text

    tok = train_tokenizer(training_texts(), cfg.vocab_size, min_frequency=cfg.min_frequency)
    run_dir = RunDir(cfg.run_dir)
    out = run_dir.path("tokenizer")
    save_tokenizer(tok, out)
    stats = {
        "vocab_size": len(tok),
        "special_tokens": {t: tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS},
        "inputs": files,
        "train": sample,
        "input_chars": total_chars,
        "skipped_documents": {"empty_or_missing_text": skipped},
        "heldout": bytes_per_token(tok, holdout),
        "seconds": round(time.time() - started, 2),
    }
    run_dir.write_json("tokenizer/stats.json", stats)
    return {"artifacts": out, "vocab_size": stats["vocab_size"], "train_chars": sample["chars"],
            "heldout_bytes_per_token": stats["heldout"]["bytes_per_token"]}

