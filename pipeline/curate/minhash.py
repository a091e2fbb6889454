"""Batch MinHash signatures, bit-identical to `datasketch.MinHash` (2.0, affine32 scheme).

    .venv/bin/python -c "from pipeline.curate.minhash import MinHasher; print(MinHasher().signatures(['a b c d e f'])[0][:4])"

Shingles are word n-grams of the normalised text, joined by spaces and hashed
with sha1_hash32 as datasketch does; the permutation `a*fmix32(h)+b mod 2^32` and
the minimum are computed for a whole batch of documents at once in numpy.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

import numpy as np

_M1, _M2 = np.uint32(0x85EBCA6B), np.uint32(0xC2B2AE35)
_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)


def normalize(text: str) -> str:
    """Lowercase, NFKC, no punctuation, digits to 0, single spaces (exact dedup and shingles)."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _PUNCT.sub(" ", text)
    text = re.sub(r"\d", "0", text)
    return " ".join(text.split())


def shingles(text: str, n: int = 5) -> set[bytes]:
    ws = normalize(text).split()
    if len(ws) < n:
        return {" ".join(ws).encode()} if ws else set()
    return {" ".join(ws[i:i + n]).encode() for i in range(len(ws) - n + 1)}


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * _M1
    h = h ^ (h >> np.uint32(13))
    h = h * _M2
    return h ^ (h >> np.uint32(16))


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 parameters: the same RandomState draws in the same order."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def hash32(items) -> np.ndarray:
    # sha1_hash32: the first 4 bytes of sha1, little-endian.
    return np.frombuffer(b"".join(hashlib.sha1(x).digest()[:4] for x in items), dtype="<u4").astype(np.uint32)


class MinHasher:
    def __init__(self, num_perm: int = 112, seed: int = 1, ngram: int = 5):
        self.num_perm, self.seed, self.ngram = num_perm, seed, ngram
        self.a, self.b = permutations(num_perm, seed)

    def signature_of_hashes(self, hv: np.ndarray) -> np.ndarray:
        if hv.size == 0:
            return np.full(self.num_perm, 0xFFFFFFFF, dtype=np.uint32)
        mixed = _fmix32(hv.astype(np.uint32))
        out = np.full(self.num_perm, 0xFFFFFFFF, dtype=np.uint32)
        # Chunks bound the (shingles x perms) temporary for long documents.
        for i in range(0, mixed.size, 4096):
            m = mixed[i:i + 4096, None]
            np.minimum(out, (m * self.a[None, :] + self.b[None, :]).min(axis=0), out=out)
        return out

    def signatures(self, texts: list[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32: the hashvalues datasketch gives after update() of each shingle."""
        sets = [shingles(t, self.ngram) for t in texts]
        lens = [len(s) for s in sets]
        allh = hash32([x for s in sets for x in s]) if sum(lens) else np.zeros(0, np.uint32)
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        pos = 0
        for i, n in enumerate(lens):
            out[i] = self.signature_of_hashes(allh[pos:pos + n])
            pos += n
        return out


def band_matrix(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(docs, bands) int64 bucket keys: each band's rows folded with a 64-bit multiply-xor
    hash seeded by the band index, so equal bands in different positions never collide."""
    sigs = np.asarray(sigs, dtype=np.uint64).reshape(len(sigs), bands, rows)
    h = np.broadcast_to(np.arange(bands, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(1),
                        (len(sigs), bands)).copy()
    for r in range(rows):
        h ^= sigs[:, :, r]
        h *= np.uint64(0xBF58476D1CE4E5B9)
        h ^= h >> np.uint64(31)
    return (h & np.uint64((1 << 63) - 1)).astype(np.int64)


def estimated_jaccard(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise share of equal MinHash slots: an unbiased estimate of the pairs' Jaccard."""
    return (np.asarray(a) == np.asarray(b)).mean(axis=-1)


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a or b else 1.0
