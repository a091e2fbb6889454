"""The small trained text classifiers behind the injection and harmful guards (CPU, offline).

    .venv/bin/python -m guardrails.classifier        # trains both, prints CV figures, caches them

Model: TF-IDF word 1-2-grams + character 2-5-grams (within word boundaries, so that
spelling tricks and unseen inflections still share features) into a logistic regression
with balanced class weights. Scoring does not go through sklearn's `predict_proba`
(whose input validation costs more than the model): `FastScorer` applies the fitted
vocabularies, idf weights and coefficients directly, and the n-gram counts of a text are
cached, so the injection and harmful guards, whose vectorisers share parameters, cut a
text into n-grams once between them; ~1-2 ms per KB. Training data is ours, hand-written and
documented in guardrails/data/*.yaml (see their headers), expanded here from templates;
the sets in ../shared/data/guard are for evaluation only and never read here.

Calibration: out-of-fold scores on the training set give the raw probability at which
`target_fpr` of the benign prompts would be flagged; `score()` rescales raw
probabilities piecewise-linearly so that this operating point is 0.5, the policy's
default threshold. Trained models are cached under $D2D_CACHE_DIR (default
~/.cache/data2dialogue) keyed by a hash of the data and of this file.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
from collections import Counter
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from pathlib import Path

import numpy as np

DATA = Path(__file__).with_name("data")
BENIGN = "benign"


@cache
def load_data(name: str) -> dict:
    import yaml

    return yaml.safe_load((DATA / f"{name}.yaml").read_text())


def benign_texts() -> list[str]:
    d = load_data("benign")
    return list(d["prompts"]) + [f.format(x=t) for f in d["frames"] for t in d["topics"]]


def harmful_examples(per_act: int = 6, seed: int = 0) -> list[tuple[str, str]]:
    """(text, category) pairs: each act in `per_act` of the shared request frames."""
    rng = random.Random(seed)
    frames = load_data("benign")["frames"]
    d = load_data("harmful")
    out = []
    for cat, spec in d["categories"].items():
        for act in spec["acts"]:
            out += [(f.format(x=act), cat) for f in rng.sample(frames, per_act)]
        out += [(r, cat) for r in spec.get("requests", [])]
    for cat, lines in d.get("statements", {}).items():
        out += [(s, cat) for s in lines]
    return out


def injection_texts(n_override: int = 500, seed: int = 0) -> list[str]:
    """Hand-written attacks, override-grammar expansions, and attacks buried in benign text."""
    rng = random.Random(seed)
    d = load_data("injection")
    g = d["override"]
    out = list(d["prompts"])
    for _ in range(n_override):
        s = f"{rng.choice(g['verbs'])} {rng.choice(g['scopes'])} {rng.choice(g['targets'])} {rng.choice(g['payloads'])}"
        s = s.replace(" .", ".").replace(' ",', ",").replace(' ".', ".")
        style = rng.random()
        s = s.upper() if style < 0.15 else s[0].upper() + s[1:]
        out.append(s)
    benign = load_data("benign")["prompts"]
    for attack in rng.sample(out, 80):
        out.append(f"{rng.choice(benign)} {attack}")
    return out


@lru_cache(maxsize=8)
def _analyzer(params: tuple):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(**dict(params)).build_analyzer()


@lru_cache(maxsize=256)
def ngram_counts(params: tuple, text: str) -> Counter:
    """n-gram -> count for one text under one vectoriser's parameters (shared by all models)."""
    return Counter(_analyzer(params)(text))


_ANALYZER_PARAMS = ("analyzer", "ngram_range", "lowercase", "token_pattern", "strip_accents",
                    "preprocessor", "tokenizer", "stop_words")


class FastScorer:
    """The fitted union of TF-IDF vectorisers + logistic regression, as plain lookups.

    Same arithmetic as the sklearn pipeline (counts, sublinear tf, idf, l2 norm per
    vectoriser, then the linear model and its softmax or sigmoid)."""

    def __init__(self, pipeline):
        union, lr = pipeline.steps[0][1], pipeline.steps[-1][1]
        self.blocks = []
        offset = 0
        for _, vec in union.transformer_list:
            params = vec.get_params()
            key = tuple((k, params[k]) for k in _ANALYZER_PARAMS)
            if not (params["sublinear_tf"] and params["use_idf"] and params["norm"] == "l2"
                    and not params["binary"]):
                raise ValueError("FastScorer supports sublinear, idf-weighted, l2-normed tf-idf only")
            self.blocks.append((key, vec.vocabulary_, vec.idf_, offset))
            offset += len(vec.vocabulary_)
        self.coef_t = np.ascontiguousarray(lr.coef_.T)
        self.intercept = lr.intercept_
        self.binary = lr.coef_.shape[0] == 1

    def known_words(self, text: str) -> int:
        """Distinct words of `text` in the word vectoriser's vocabulary (the evidence a score rests on)."""
        return sum(1 for key, vocab, _, _ in self.blocks if dict(key)["analyzer"] == "word"
                   for g in ngram_counts(key, text) if " " not in g and g in vocab)

    def predict_proba(self, texts: list[str]) -> np.ndarray:
        logits = np.tile(self.intercept, (len(texts), 1))
        for row, text in enumerate(texts):
            for key, vocab, idf, offset in self.blocks:
                found = [(i, c) for g, c in ngram_counts(key, text).items()
                         if (i := vocab.get(g)) is not None]
                if not found:
                    continue
                idx, tf = np.array(found).T
                w = (np.log(tf) + 1.0) * idf[idx]
                w /= np.sqrt(w @ w)
                logits[row] += w @ self.coef_t[idx + offset]
        if self.binary:
            p1 = 1.0 / (1.0 + np.exp(-logits[:, 0]))
            return np.stack([1.0 - p1, p1], axis=1)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)


@dataclass
class TextClassifier:
    pipeline: object
    labels: list[str]
    raw_threshold: float
    """Raw P(not benign) at the calibrated operating point."""
    cv: dict

    @cached_property
    def fast(self) -> FastScorer:
        return FastScorer(self.pipeline)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "fast"}

    def raw(self, texts: list[str]) -> np.ndarray:
        """P(not benign) per text."""
        return 1.0 - self.fast.predict_proba(texts)[:, self.labels.index(BENIGN)]

    def calibrate(self, p: np.ndarray) -> np.ndarray:
        """Rescale raw probabilities so that the operating point is 0.5 (monotone)."""
        t = self.raw_threshold
        return np.where(p < t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1 - t))

    def score(self, texts: list[str]) -> np.ndarray:
        """Calibrated score: 0.5 at the operating point, monotone in the raw probability."""
        return self.calibrate(self.raw(texts))

    def predict(self, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        """Calibrated scores and the most likely non-benign class, per text, in one pass."""
        proba = self.fast.predict_proba(texts)
        b = self.labels.index(BENIGN)
        scores = self.calibrate(1.0 - proba[:, b])
        proba[:, b] = -1
        return scores, [self.labels[i] for i in proba.argmax(axis=1)]

    def categories(self, texts: list[str]) -> list[str]:
        """Most likely non-benign class per text."""
        return self.predict(texts)[1]


def _pipeline(c: float):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    features = make_union(
        TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=1,
                        token_pattern=r"(?u)\b\w+\b|[<>|\[\]#]{2,}"),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                        max_features=60000),
    )
    return make_pipeline(features, LogisticRegression(C=c, class_weight="balanced", max_iter=3000))


def train(texts: list[str], labels: list[str], *, target_fpr: float = 0.01, c: float = 8.0,
          folds: int = 3, seed: int = 0) -> TextClassifier:
    """Fit on all data; calibrate the operating point on out-of-fold benign scores."""
    from sklearn.model_selection import StratifiedKFold

    y = np.array(labels)
    oof = np.zeros(len(texts))
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    arr = np.array(texts, dtype=object)
    for tr, te in skf.split(arr, y):
        m = _pipeline(c).fit(list(arr[tr]), y[tr])
        lab = list(m.classes_)
        oof[te] = 1.0 - m.predict_proba(list(arr[te]))[:, lab.index(BENIGN)]
    benign = oof[y == BENIGN]
    raw_t = float(np.clip(np.quantile(benign, 1.0 - target_fpr), 0.05, 0.95))
    pos = oof[y != BENIGN]
    cv = {"oof_recall": round(float((pos >= raw_t).mean()), 4),
          "oof_fpr": round(float((benign >= raw_t).mean()), 4),
          "n_positive": int(len(pos)), "n_benign": int(len(benign)), "raw_threshold": round(raw_t, 4)}
    model = _pipeline(c).fit(texts, list(y))
    return TextClassifier(model, list(model.classes_), raw_t, cv)


def injection_trainset() -> tuple[list[str], list[str]]:
    attacks = injection_texts()
    benign = benign_texts() + [t for t, _ in harmful_examples(per_act=2)]
    return attacks + benign, ["injection"] * len(attacks) + [BENIGN] * len(benign)


def harmful_trainset() -> tuple[list[str], list[str]]:
    pairs = harmful_examples()
    benign = benign_texts()
    return [t for t, _ in pairs] + benign, [c for _, c in pairs] + [BENIGN] * len(benign)


TRAINSETS = {"injection": injection_trainset, "harmful": harmful_trainset}


def cache_dir() -> Path:
    return Path(os.environ.get("D2D_CACHE_DIR", Path.home() / ".cache" / "data2dialogue")) / "guardrails"


def _fingerprint(name: str) -> str:
    import sklearn

    h = hashlib.sha256(sklearn.__version__.encode())
    for p in sorted(DATA.glob("*.yaml")) + [Path(__file__)]:
        h.update(p.read_bytes())
    return f"{name}-{h.hexdigest()[:16]}"


@cache
def get_model(name: str) -> TextClassifier:
    """The trained classifier `name` (injection | harmful): from the cache, else trained now."""
    if name not in TRAINSETS:
        raise ValueError(f"unknown classifier {name!r}; one of {', '.join(TRAINSETS)}")
    path = cache_dir() / f"{_fingerprint(name)}.pkl"
    if path.exists():
        try:
            with path.open("rb") as f:
                return pickle.load(f)
        except Exception:  # noqa: BLE001 - a stale or torn cache file is retrained, not fatal
            pass
    texts, labels = TRAINSETS[name]()
    model = train(texts, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    with tmp.open("wb") as f:
        pickle.dump(model, f)
    tmp.replace(path)
    return model


if __name__ == "__main__":
    import time

    for n in TRAINSETS:
        t = time.time()
        m = get_model(n)
        print(n, m.cv, f"{time.time() - t:.1f}s")
