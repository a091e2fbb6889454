"""Conversations → training rows: ChatML ids, assistant-only labels, best-fit packing or padding.

    from pipeline.chat.encode import encode_conversations, build_rows
    enc, counts = encode_conversations(tok, convs, max_len=256)
    rows = build_rows(enc, max_len=256, packing=True, pad_id=tok.pad_token_id)
    rows["input_ids"].shape, rows["labels"], rows["position_ids"]    # numpy [N, max_len]
    SFTBatches(rows, batch_size=8, seed=0).batch(step, rank, world_size)  # torch tensors

Rendering and the assistant mask come from the tokenizer stage (`chat_spans`),
the one place the chat format is defined. Labels are aligned with `input_ids`
(Hugging Face convention: the model shifts them), −100 everywhere except
assistant tokens, whose span includes the closing `<|im_end|>` so the model
learns to stop. Packed rows restart `position_ids` at each conversation, which
lets Hugging Face attention keep packed conversations apart (block-diagonal mask
when no 2-D attention mask is given).
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

IGNORE = -100


@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]


def encode_one(tok, messages: list[dict], max_len: int) -> tuple[Encoded | None, str | None]:
    """One conversation → (Encoded, None), or (None, reason) when nothing is left to learn.

    Longer than `max_len` tokens: cut at `max_len` (reason `truncated` is still
    returned with the row so the caller can count it).
    """
    from pipeline.tokenizer import chat_spans

    ids, mask = chat_spans(tok, messages)
    ids, mask = list(ids), list(mask)
    note = None
    if len(ids) > max_len:
        ids, mask = ids[:max_len], mask[:max_len]
        note = "truncated"
    labels = [t if m else IGNORE for t, m in zip(ids, mask, strict=False)]
    if not any(m for m in mask):
        return None, "no_assistant_tokens_after_truncation" if note else "no_assistant_tokens"
    return Encoded(ids, labels), note


def encode_conversations(tok, convs: list[dict], max_len: int) -> tuple[list[Encoded], Counter]:
    """Encode `{"messages"}` rows; counts `conversations`, `truncated`, `dropped_<reason>`, token totals."""
    counts: Counter = Counter()
    out = []
    for conv in convs:
        counts["conversations"] += 1
        enc, note = encode_one(tok, conv["messages"], max_len)
        if enc is None:
            counts[f"dropped_{note}"] += 1
            continue
        if note == "truncated":
            counts["truncated"] += 1
        counts["tokens"] += len(enc.ids)
        counts["assistant_tokens"] += sum(1 for x in enc.labels if x != IGNORE)
        out.append(enc)
    return out, counts


def best_fit(lengths: list[int], capacity: int) -> list[list[int]]:
    """Best-fit decreasing bin packing: indices grouped into bins of total length ≤ capacity.

    Each item goes into the open bin with the least room that still fits it
    (a sorted list of (room, bin) keeps that a bisect), longest items first.
    """
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    rooms: list[tuple[int, int]] = []  # sorted (remaining room, bin index)
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"item {i} of length {n} exceeds capacity {capacity}")
        k = bisect.bisect_left(rooms, (n, -1))
        if k < len(rooms):
            room, b = rooms.pop(k)
            bins[b].append(i)
            bisect.insort(rooms, (room - n, b))
        else:
            bins.append([i])
            bisect.insort(rooms, (capacity - n, len(bins) - 1))
    return bins


def build_rows(enc: list[Encoded], max_len: int, packing: bool, pad_id: int) -> dict[str, np.ndarray]:
    """Fixed-shape rows `[N, max_len]`: input_ids, labels, attention_mask, position_ids.

    `packing`: several conversations per row (best fit); else one per row, padded.
    Labels follow the training loop's contract: already shifted, `labels[t]` is the
    target for the token after `input_ids[t]` (so a conversation's last position,
    whose successor belongs to the next one, has none).
    """
    groups = best_fit([len(e.ids) for e in enc], max_len) if packing else [[i] for i in range(len(enc))]
    n = len(groups)
    input_ids = np.full((n, max_len), pad_id, dtype=np.int64)
    labels = np.full((n, max_len), IGNORE, dtype=np.int64)
    attention = np.zeros((n, max_len), dtype=np.int64)
    positions = np.zeros((n, max_len), dtype=np.int64)
    for r, group in enumerate(groups):
        at = 0
        for i in group:
            e = enc[i]
            k = len(e.ids)
            input_ids[r, at : at + k] = e.ids
            labels[r, at : at + k - 1] = e.labels[1:]
            attention[r, at : at + k] = 1
            positions[r, at : at + k] = np.arange(k)
            at += k
        # Padding continues the last conversation's positions so that it forms no
        # separate packed segment; it is masked from loss and never attended to.
        positions[r, at:] = np.arange(k, k + max_len - at)
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention, "position_ids": positions}


def forward_rows(model, input_ids, position_ids):
    """The model on rows of this layout, keeping packed conversations apart.

    Hugging Face builds the block-diagonal mask from restarted `position_ids` only
    when there is neither a 2-D attention mask nor a KV cache, hence no mask and
    `use_cache=False` (the default cache silently turns packing into cross-talk).
    """
    return model(input_ids=input_ids, position_ids=position_ids, use_cache=False)


def sft_loss(model, batch: dict):
    """Mean cross-entropy over labelled (assistant) tokens; the training loop's `loss_fn`."""
    import torch.nn.functional as F

    logits = forward_rows(model, batch["input_ids"], batch["position_ids"]).logits
    labels = batch["labels"]
    loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE)
    return loss, {"tokens": int((labels != IGNORE).sum())}


class SFTBatches:
    """Picklable batch source: row indices are a function of (step, rank, world_size, seed).

    The loop's `index` is the step (times grad_accum, plus the micro-batch).
    Each epoch is one seeded permutation of the rows; step s takes the next
    `batch_size * world_size` of it and rank r its own slice, so every worker sees
    different rows and a resumed run continues exactly where it stopped. Rows are
    held in memory or, given the path of the `.npz` that `save_rows` wrote, loaded
    lazily once per worker, so the source itself pickles small.
    """

    def __init__(self, rows: dict[str, np.ndarray] | str, batch_size: int, seed: int, shuffle: bool = True):
        self._rows = rows if isinstance(rows, dict) else None
        self.path = rows if isinstance(rows, str) else None
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.n = len(self.rows["input_ids"])

    @property
    def rows(self) -> dict[str, np.ndarray]:
        if self._rows is None:
            self._rows = load_rows(self.path)
        return self._rows

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.path:
            state["_rows"] = None
        return state

    def steps_per_epoch(self, world_size: int = 1) -> int:
        return max(1, math.ceil(self.n / (self.batch_size * world_size)))

    def indices(self, step: int, rank: int, world_size: int) -> np.ndarray:
        per_step = self.batch_size * world_size
        epoch, within = divmod(step, self.steps_per_epoch(world_size))
        start = within * per_step + rank * self.batch_size
        if not self.shuffle:  # validation: rows in order, batch `step` of the split
            return np.arange(start, start + self.batch_size) % self.n
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return perm[np.arange(start, start + self.batch_size) % self.n]

    def batch(self, step: int, rank: int, world_size: int) -> dict:
        import torch

        idx = np.sort(self.indices(step, rank, world_size))
        return {k: torch.from_numpy(np.ascontiguousarray(v[idx])) for k, v in self.rows.items()}

    __call__ = batch


def save_rows(rows: dict[str, np.ndarray], path: str) -> str:
    """Rows as one uncompressed `.npz` (local path or URI)."""
    import fsspec

    with fsspec.open(path, "wb") as f:
        np.savez(f, **{k: v.astype(np.int32) for k, v in rows.items()})
    return path


def load_rows(path: str) -> dict[str, np.ndarray]:
    import io

    import fsspec

    with fsspec.open(path, "rb") as f:
        z = np.load(io.BytesIO(f.read()))
        return {k: z[k].astype(np.int64) for k in z.files}
