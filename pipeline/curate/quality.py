"""Model-based quality scoring (the step FineWeb-Edu, DCLM and Nemotron-CC add after the rules) and its trainer.

    .venv/bin/d2d curate-quality-train --positive sft.jsonl --negative crawl.jsonl --output runs/q/quality.bin

`QualityScorer` loads a supervised fastText classifier (`.bin`, the format of DCLM's
released `openhermes_reddit_eli5_vs_rw_v2_bigram_200k_train.bin`), scores each
document with the probability of `label` (`__label__hq`) and records it as
`quality_score`; it keeps documents at or above `threshold`, or the top `top_fraction`
of each batch it is given (`filter_batch`). Only `fasttext-predict` is installed here
(numpy-2 safe, prediction only), so `train` fits the same model in numpy and writes it
in fastText's binary format (magic 793712314, version 12; loss softmax, model sup):
a bag of words (whitespace tokens, `wordNgrams=1`, no subwords) averaged into a
`dim`-vector and a linear softmax over the two labels, trained with fastText's SGD
(linearly decaying learning rate). `fasttext.load_model` reads the file like any other.
"""

from __future__ import annotations

import json
import os
import struct
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from pipeline.curate.steps import Step
from pipeline.errors import StageError

MAGIC, VERSION = 793712314, 12
EOS = "</s>"


def normalise(text: str) -> str:
    """One line of whitespace-separated tokens: what fastText's predict reads (it refuses newlines)."""
    return " ".join(text.split())


class QualityScorer(Step):
    name = "quality"

    def __init__(self, model_path: str, label: str = "__label__hq", threshold: float = 0.5, top_fraction: float = 0.0):
        import fasttext

        if not os.path.isfile(model_path):
            raise StageError(f"quality_model {model_path!r} does not exist")
        labels = read_labels(model_path)  # checks the header before fastText's C++ reads the file
        try:
            self.model = fasttext.load_model(model_path)
        except ValueError as e:
            raise StageError(f"quality_model {model_path!r} is not a fastText model: {e}") from None
        if label not in labels:
            raise StageError(f"quality_label {label!r} is not a label of {model_path} ({labels})")
        self.label, self.threshold, self.top_fraction = label, threshold, top_fraction

    @classmethod
    def from_config(cls, cfg) -> QualityScorer | None:
        """The step for a CurateConfig, or None when no classifier is configured (the default)."""
        if not cfg.quality_model:
            return None
        return cls(cfg.quality_model, cfg.quality_label, cfg.quality_threshold, cfg.quality_top_fraction)

    def score(self, text: str) -> float:
        labels, probs = self.model.predict(normalise(text), k=-1)
        return float(dict(zip(labels, probs, strict=True)).get(self.label, 0.0))

    def __call__(self, doc):
        doc["quality_score"] = round(self.score(doc["text"]), 5)
        if self.top_fraction:
            return True, ""  # decided per batch in filter_batch
        return (True, "") if doc["quality_score"] >= self.threshold else (False, "quality_below_threshold")

    def filter_batch(self, docs: list[dict]) -> tuple[list[dict], list[dict]]:
        """(kept, dropped) of scored docs under top_fraction: the best ceil(fraction * n), ties by order."""
        order = sorted(range(len(docs)), key=lambda i: -docs[i]["quality_score"])
        keep = set(order[: int(np.ceil(self.top_fraction * len(docs)))])
        return [d for i, d in enumerate(docs) if i in keep], [d for i, d in enumerate(docs) if i not in keep]


def read_labels(path: str) -> list[str]:
    """The labels in a fastText .bin's dictionary (fasttext-predict has no get_labels)."""
    with open(path, "rb") as f:
        head = f.read(8 + 12 * 4 + 8 + 28)
        if len(head) < 92 or struct.unpack_from("<i", head)[0] != MAGIC:
            raise StageError(f"quality_model {path!r} is not a fastText .bin")
        size = struct.unpack_from("<i", head, 64)[0]
        buf, pos, labels = b"", 0, []
        for _ in range(size):
            while (end := buf.find(b"\0", pos)) < 0 or end + 10 > len(buf):
                more = f.read(1 << 20)
                if not more:
                    raise StageError(f"quality_model {path!r}: dictionary cut short")
                buf, pos = buf[pos:] + more, 0
            if buf[end + 9] == 1:
                labels.append(buf[pos:end].decode("utf-8", "replace"))
            pos = end + 10
        return labels


# ---------------------------------------------------------------- training


def train(positive: list[str], negative: list[str], *, dim: int = 16, epochs: int = 5, lr: float = 0.1,
          min_count: int = 1, seed: int = 0, labels: tuple[str, str] = ("__label__hq", "__label__cc")):
    """(vocabulary, input matrix, output matrix, labels) of a fastText-style supervised classifier."""
    rng = np.random.default_rng(seed)
    docs = [(normalise(t).split() + [EOS], 0) for t in positive] + [(normalise(t).split() + [EOS], 1) for t in negative]
    counts = Counter(w for toks, _ in docs for w in toks)
    vocab = [w for w, c in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])) if c >= min_count]
    index = {w: i for i, w in enumerate(vocab)}
    ids = [(np.array([index[w] for w in toks if w in index], dtype=np.int64), y) for toks, y in docs]
    emb = rng.uniform(-1.0 / dim, 1.0 / dim, size=(len(vocab), dim)).astype(np.float32)
    out = np.zeros((2, dim), dtype=np.float32)  # fastText starts the output layer at zero
    steps, step = epochs * len(ids), 0
    for _ in range(epochs):
        for j in rng.permutation(len(ids)):
            x, y = ids[j]
            if not len(x):
                continue
            alpha = lr * (1.0 - step / steps)
            step += 1
            h = emb[x].mean(axis=0)
            z = out @ h
            p = np.exp(z - z.max())
            p /= p.sum()
            g = -p
            g[y] += 1.0  # gradient ascent on log p(y), as fastText's softmax loss writes it
            grad_h = alpha * (out.T @ g)
            out += alpha * np.outer(g, h)
            np.add.at(emb, x, grad_h / len(x))
    return vocab, [counts[w] for w in vocab], emb, out, list(labels)


def write_fasttext_bin(path: str, vocab: list[str], counts: list[int], emb: np.ndarray, out: np.ndarray,
                       labels: list[str], label_counts: list[int]) -> None:
    """fastText's .bin layout: header, Args, Dictionary, quant flag + input matrix, qout flag + output matrix."""
    dim = emb.shape[1]
    # Args in fastText's save order: dim ws epoch minCount neg wordNgrams loss(softmax=3) model(sup=3)
    # bucket minn maxn lrUpdateRate, then t (double).
    args = struct.pack("<12i", dim, 5, 5, 1, 5, 1, 3, 3, 0, 0, 0, 100) + struct.pack("<d", 1e-4)
    entries = [(w, c, 0) for w, c in zip(vocab, counts, strict=True)] + [
        (lab, c, 1) for lab, c in zip(labels, label_counts, strict=True)]
    with open(path + ".tmp", "wb") as f:
        f.write(struct.pack("<ii", MAGIC, VERSION) + args)
        f.write(struct.pack("<iiiqq", len(entries), len(vocab), len(labels), sum(counts), -1))
        for word, count, kind in entries:
            f.write(word.encode() + b"\0" + struct.pack("<qb", count, kind))
        f.write(struct.pack("<?", False) + struct.pack("<qq", *emb.shape) + emb.astype("<f4").tobytes())
        f.write(struct.pack("<?", False) + struct.pack("<qq", *out.shape) + out.astype("<f4").tobytes())
    os.replace(path + ".tmp", path)


def read_texts(path: str, field: str = "text", limit: int = 0) -> list[str]:
    """The `field` strings of a JSONL(.gz) or parquet file (SFT rows: their assistant turns)."""
    if path.endswith(".parquet"):
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        import gzip

        with (gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")) as f:
            rows = [json.loads(ln) for ln in f if ln.strip()]
    texts = []
    for row in rows:
        val = row.get(field) if isinstance(row, dict) else None
        if isinstance(val, list):  # chat rows: the assistant answers are the text
            val = "\n".join(m.get("content", "") for m in val if isinstance(m, dict) and m.get("role") == "assistant")
        if isinstance(val, str) and val.strip():
            texts.append(val)
    return texts[:limit] if limit else texts


@dataclass(kw_only=True)
class QualityTrainConfig:
    positive: str = ""
    """JSONL(.gz) or parquet of good text (e.g. SFT answers): label __label__hq."""
    negative: str = ""
    """JSONL(.gz) or parquet of ordinary crawl text (e.g. RUN/curated/part-*.parquet): label __label__cc."""
    field: str = "text"
    """Column or JSON key holding the text; a list of chat messages contributes its assistant turns."""
    output: str = ""
    """Where to write the classifier (.bin); default RUN/quality/quality.bin."""
    run_dir: str = "runs/default"
    """Run directory (for the default output)."""
    dim: int = 16
    """Embedding size."""
    epochs: int = 5
    """Passes over the data."""
    lr: float = 0.1
    """Initial learning rate (decays linearly to 0)."""
    min_count: int = 1
    """Words seen fewer times are left out of the vocabulary."""
    max_docs: int = 0
    """Use at most this many documents per side (0: all)."""
    seed: int = 0
    """Seed of the initialisation and the order of examples."""

    presets: ClassVar[dict[str, dict]] = {}

    def __post_init__(self):
        for name in ("dim", "epochs", "min_count"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.max_docs < 0:
            raise ValueError(f"max_docs must be >= 0, got {self.max_docs}")


def run(cfg: QualityTrainConfig) -> dict:
    """Train from cfg.positive vs cfg.negative and write a fastText .bin; report its training accuracy."""
    for name in ("positive", "negative"):
        if not getattr(cfg, name) or not os.path.isfile(getattr(cfg, name)):
            raise StageError(f"{name}: {getattr(cfg, name)!r} is not a file")
    pos, neg = (read_texts(getattr(cfg, n), cfg.field, cfg.max_docs) for n in ("positive", "negative"))
    if not pos or not neg:
        raise StageError(f"need text on both sides: {len(pos)} positive, {len(neg)} negative (field {cfg.field!r})")
    vocab, counts, emb, out, labels = train(pos, neg, dim=cfg.dim, epochs=cfg.epochs, lr=cfg.lr,
                                            min_count=cfg.min_count, seed=cfg.seed)
    path = cfg.output or os.path.join(cfg.run_dir, "quality", "quality.bin")
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_fasttext_bin(path, vocab, counts, emb, out, labels, [len(pos), len(neg)])
    scorer = QualityScorer(path, labels[0])
    correct = sum(scorer.score(t) >= 0.5 for t in pos) + sum(scorer.score(t) < 0.5 for t in neg)
    return {"artifacts": [path], "positive": len(pos), "negative": len(neg), "vocab": len(vocab),
            "train_accuracy": round(correct / (len(pos) + len(neg)), 4)}
