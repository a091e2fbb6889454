"""A guard model trained on public data by `d2d guard train`: hashed n-gram logistic regressions, saved as a folder.

    .venv/bin/python -m guardrails.guard_model "How do I kill a Python process?"   # scores of guardrails/models/guard-v1

Opt-in: a guard uses it when its `model` field names a folder (the default policy still uses
the hand-written-data classifiers of guardrails/classifier.py; see docs/guardrails.md for why).

Features: word 1-2-grams and character 2-5-grams (within word boundaries, so spelling
tricks and unseen inflections still share features), each hashed into 2^18 buckets,
sublinear tf, l2-normalised per block. A detector is a logistic regression over them;
`score()` rescales its probability piecewise-linearly so that the operating point chosen
by `d2d guard train` (from leave-one-source-out false positives) is 0.5, the policy's
threshold. Scoring is a sparse dot product with no sklearn validation on the hot path, and
the features of a text are cached, so the injection and harmful guards hash a text once
between them (~1-2 ms per KB).

A guard model is a folder (guardrails/models/guard-v1 is the packaged one, written by
`d2d guard train`): `weights.npz` (float16 coefficients), `config.json` (features,
operating points, version), `metrics.json` (leave-one-source-out figures), `manifest.json`
(the data it was trained on, with licences) and `known_words.txt`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np

MODELS = Path(__file__).with_name("models")
DEFAULT_MODEL = MODELS / "guard-v1"
N_FEATURES = 2 ** 18
WORD_PATTERN = r"(?u)\b\w+\b|[<>|\[\]#]{2,}"
DETECTORS = ("injection", "harmful")


@lru_cache(maxsize=2)
def _vectorizers() -> tuple:
    from sklearn.feature_extraction.text import HashingVectorizer

    common = dict(n_features=N_FEATURES, alternate_sign=False, norm=None, lowercase=True, dtype=np.float32)
    return (HashingVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=WORD_PATTERN, **common),
            HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), **common))


def _sublinear_l2(x):
    x.data = 1.0 + np.log(x.data)
    norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
    norms[norms == 0] = 1.0
    x.data /= np.repeat(norms, np.diff(x.indptr)).astype(np.float32)
    return x


def featurize(texts: list[str]):
    """texts -> sparse (n, 2 * N_FEATURES) float32 matrix: [word block | char block]."""
    import scipy.sparse as sp

    return sp.hstack([_sublinear_l2(v.transform(texts)) for v in _vectorizers()], format="csr")


@lru_cache(maxsize=256)
def text_features(text: str):
    """The feature row of one text (shared by every detector that scores it)."""
    return featurize([text])


def words(text: str) -> set[str]:
    import re

    return set(re.findall(r"(?u)\b\w+\b", text.lower()))


@dataclass
class Detector:
    """One logistic regression: P(positive) per text, calibrated so `raw_threshold` -> 0.5."""

    coef: np.ndarray
    """(2 * N_FEATURES,) or (classes, 2 * N_FEATURES) float32."""
    intercept: np.ndarray
    raw_threshold: float = 0.5
    labels: tuple[str, ...] = ()
    """Class names of a multiclass detector (the harmful-category namer); empty for binary."""

    def logits(self, texts: list[str]) -> np.ndarray:
        import scipy.sparse as sp

        x = sp.vstack([text_features(t) for t in texts], format="csr") if texts else featurize([])
        return np.asarray(x @ self.coef.T) + self.intercept

    def raw(self, texts: list[str]) -> np.ndarray:
        """Uncalibrated P(positive) per text (binary detectors)."""
        return 1.0 / (1.0 + np.exp(-self.logits(texts).ravel()))

    def calibrate(self, p: np.ndarray) -> np.ndarray:
        t = self.raw_threshold
        return np.where(p < t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1 - t))

    def score(self, texts: list[str]) -> np.ndarray:
        """Calibrated score: 0.5 at the operating point, monotone in the probability."""
        return self.calibrate(self.raw(texts))

    def classes(self, texts: list[str]) -> list[str]:
        """Most likely class per text (multiclass detectors)."""
        return [self.labels[i] for i in self.logits(texts).argmax(axis=1)]


@dataclass
class GuardModel:
    """The detectors of one guard-model folder."""

    path: Path
    config: dict
    detectors: dict[str, Detector]
    known: frozenset[str]

    def detector(self, name: str) -> Detector:
        if name not in self.detectors:
            raise ValueError(f"guard model {self.path}: no detector {name!r} (has {', '.join(self.detectors)})")
        return self.detectors[name]

    def known_words(self, text: str) -> int:
        """Distinct words of `text` seen in at least a few English training prompts (the evidence
        a score rests on)."""
        return sum(1 for w in words(text) if w in self.known)


def save(path: Path, config: dict, detectors: dict[str, Detector], known: list[str], metrics: dict,
         manifest: dict) -> None:
    """Write a guard-model folder (see the module docstring)."""
    path.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for name, d in detectors.items():
        arrays[f"{name}.coef"] = d.coef.astype(np.float16)
        arrays[f"{name}.intercept"] = d.intercept.astype(np.float32)
    np.savez_compressed(path / "weights.npz", **arrays)
    config = {**config, "n_features": N_FEATURES, "word_pattern": WORD_PATTERN,
              "detectors": {n: {"raw_threshold": d.raw_threshold, "labels": list(d.labels)}
                            for n, d in detectors.items()}}
    for name, obj in (("config.json", config), ("metrics.json", metrics), ("manifest.json", manifest)):
        (path / name).write_text(json.dumps(obj, indent=1, ensure_ascii=False) + "\n")
    (path / "known_words.txt").write_text("\n".join(sorted(known)) + "\n", encoding="utf-8")


def load(path: str | Path) -> GuardModel:
    """A guard-model folder written by `save` (or `d2d guard train`)."""
    path = Path(path)
    try:
        config = json.loads((path / "config.json").read_text())
        arrays = np.load(path / "weights.npz")
    except (OSError, ValueError) as e:
        raise ValueError(f"guard model: cannot load {path} ({type(e).__name__}: {e})") from e
    if config.get("n_features") != N_FEATURES or config.get("word_pattern") != WORD_PATTERN:
        raise ValueError(f"guard model: {path} was built with other features; retrain with d2d guard train")
    detectors = {}
    for name, spec in config["detectors"].items():
        coef = arrays[f"{name}.coef"].astype(np.float32)
        detectors[name] = Detector(coef, arrays[f"{name}.intercept"], float(spec["raw_threshold"]),
                                   tuple(spec["labels"]))
    known = frozenset((path / "known_words.txt").read_text(encoding="utf-8").split())
    return GuardModel(path, config, detectors, known)


@cache
def get_model(path: str = "") -> GuardModel:
    """The guard model at `path`, else the shipped guardrails/models/guard-v1 (loaded once per process)."""
    return load(path or DEFAULT_MODEL)


def check_model_dir(path: str) -> None:
    """For config validation: `path` is empty (the shipped model) or a guard-model folder."""
    if path and not (Path(path) / "config.json").is_file():
        raise ValueError(f"model: {path!r} is not a guard-model folder (no config.json); "
                         "write one with d2d guard train --model-dir DIR")


if __name__ == "__main__":
    import sys

    m = get_model()
    for t in sys.argv[1:]:
        print({n: round(float(d.score([t])[0]), 3) for n, d in m.detectors.items() if not d.labels}, t)
