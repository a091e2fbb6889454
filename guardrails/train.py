"""`d2d guard train`: build the injection and harmful detectors from public data, judged leave-one-source-out.

    .venv/bin/d2d guard train --model-dir guardrails/models/guard-v1     # the shipped model (~minutes, one core)
    .venv/bin/d2d guard eval                                             # the leave-one-source-out table only

Each detector is a logistic regression (or, for comparison, a complement naive Bayes)
over hashed word and character n-grams (guardrails/guard_model.py): harmful = harmful
requests against benign ones, injection = injections against benign ones. Rows are
weighted so that a source counts with the square root of its size and the two classes
weigh the same, so that no single source dominates.

Leave one source out: for every trainable source, train on all the others and score the
one left out; evaluation-only sources (non-commercial or unlicensed, see
guardrails/guard_data.py) are scored by the model trained on every trainable source. The
operating point is the pair of thresholds (same benign quantile for both detectors) at
which the two blocking detectors together block at most `target_fpr` of the held-out
benign rows, averaged over benign sources; recall is reported at that point and at 1/3/5%.
Scores are those the guards compute: the maximum over windows of every normalised
reading, and the injection guard's signals count as in the guard.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from guardrails import guard_model as clf
from guardrails.guard_data import Row, harmful_examples, licence, load_rows, manifest

C = 4.0  # inverse l2 strength; chosen on the leave-one-source-out table (docs/guardrails.md)
POSITIVE = {"harmful": "harmful", "injection": "injection"}
BENIGN = ("benign", "benign_tricky")
FPR_POINTS = (0.01, 0.03, 0.05)


@dataclass
class Prepared:
    rows: list[Row]
    x_train: object
    """One feature row per prompt (its canonical reading)."""
    x_windows: object
    """One feature row per scoring window; `owner[i]` is the prompt of window i."""
    owner: np.ndarray
    signals: np.ndarray
    """The injection guard's signal score per prompt (it needs no training)."""


def prepare(rows: list[Row], window_chars: int = 600) -> Prepared:
    from guardrails.injection import chunks, signal_hits
    from guardrails.normalize import normalize

    canon, wins, owner, sig = [], [], [], []
    for i, r in enumerate(rows):
        norm = normalize(r.text)
        canon.append(norm.text)
        parts = chunks(norm.all_texts, window_chars) or [""]
        wins += parts
        owner += [i] * len(parts)
        hits = signal_hits(norm.all_texts)
        if norm.signals:
            hits["obfuscation"] = 0.3
        sig.append(1.0 - np.prod([1.0 - w for w in hits.values()]) if hits else 0.0)
    return Prepared(rows, clf.featurize(canon), clf.featurize(wins), np.array(owner), np.array(sig))


def _weights(sources: list[str], y: np.ndarray) -> np.ndarray:
    src = np.array(sources)
    _, inv, counts = np.unique(src, return_inverse=True, return_counts=True)
    w = 1.0 / np.sqrt(counts[inv])
    for label in (0, 1):
        w[y == label] /= w[y == label].sum()
    return w * len(y) / 2


def fit(x, y: np.ndarray, w: np.ndarray, kind: str, seed: int) -> clf.Detector:
    if len(set(y.tolist())) < 2:  # a fold without positives (a slice): a detector that never fires
        return clf.Detector(np.zeros((1, x.shape[1]), np.float32), np.array([-20.0], np.float32))
    if kind == "complement_nb":
        from sklearn.naive_bayes import ComplementNB

        m = ComplementNB(alpha=0.3).fit(x, y, sample_weight=w)
        coef = (m.feature_log_prob_[1] - m.feature_log_prob_[0])[None, :]
        logits = np.asarray(x @ coef.T).ravel()
        # NB's log-odds are far too large for a sigmoid (scores saturate at 1.0 and thresholds
        # tie): rescale to unit spread and centre, which keeps the ranking.
        scale = 1.0 / (logits.std() or 1.0)
        return clf.Detector(_f16(coef * scale), np.array([-np.median(logits) * scale], np.float32))
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=C, solver="liblinear", dual=True, tol=1e-3, max_iter=500,
                           random_state=seed).fit(x, y, sample_weight=w)
    return clf.Detector(_f16(m.coef_), m.intercept_.astype(np.float32))


def _f16(coef: np.ndarray) -> np.ndarray:
    """Coefficients as they are stored (float16), so that figures and a reloaded model agree exactly."""
    return coef.astype(np.float16).astype(np.float32)


def fit_detectors(p: Prepared, train_idx: np.ndarray, kind: str, seed: int) -> dict[str, clf.Detector]:
    out = {}
    cats = np.array([r.category for r in p.rows])
    for name, positive in POSITIVE.items():
        idx = train_idx[np.isin(cats[train_idx], (positive, *BENIGN))]
        y = (cats[idx] == positive).astype(int)
        out[name] = fit(p.x_train[idx], y, _weights([p.rows[i].source for i in idx], y), kind, seed)
    return out


def window_scores(p: Prepared, det: clf.Detector, idx: np.ndarray) -> np.ndarray:
    """Raw probability per prompt in `idx`: the maximum over its windows."""
    mask = np.isin(p.owner, idx)
    logit = np.asarray(p.x_windows[mask] @ det.coef.T).ravel() + det.intercept[0]
    per = np.full(len(p.rows), -np.inf)
    np.maximum.at(per, p.owner[mask], logit)
    return 1.0 / (1.0 + np.exp(-per[idx]))


def heldout_scores(p: Prepared, kind: str, seed: int) -> tuple[dict[str, np.ndarray], set[str]]:
    """Per detector, each prompt's raw score from a model that never saw its source."""
    sources = np.array([r.source for r in p.rows])
    trainable = sorted({s for s in sources if licence(s)[1]})
    scores = {n: np.zeros(len(p.rows)) for n in POSITIVE}
    everything = np.flatnonzero(np.isin(sources, trainable))
    folds = [(s, np.flatnonzero(sources == s)) for s in trainable]
    folds.append(("", np.flatnonzero(~np.isin(sources, trainable))))
    for held, idx in folds:
        if not len(idx):
            continue
        dets = fit_detectors(p, everything[sources[everything] != held], kind, seed)
        for n, d in dets.items():
            scores[n][idx] = window_scores(p, d, idx)
    return scores, set(trainable)


def _blocked(p: Prepared, scores: dict, t: dict) -> np.ndarray:
    inj = np.maximum(scores["injection"] >= t["injection"], p.signals >= 0.5)
    return inj | (scores["harmful"] >= t["harmful"])


def operating_point(p: Prepared, scores: dict, target_fpr: float) -> dict[str, float]:
    """The pair of thresholds (each at a benign-score quantile) that maximises the mean of
    harmful and injection recall, averaged over positive sources, while the mean block rate
    over benign sources stays within `target_fpr`."""
    cats = np.array([r.category for r in p.rows])
    sources = np.array([r.source for r in p.rows])
    benign = np.isin(cats, BENIGN)

    def groups(mask):
        return [np.flatnonzero(mask & (sources == s)) for s in sorted(set(sources[mask]))]

    ben_g, pos_g = groups(benign), {n: groups(cats == n) for n in POSITIVE}
    qs = np.concatenate([[0.0], np.geomspace(1e-4, 0.2, 60)])
    cand = {n: [float(np.quantile(scores[n][benign], 1.0 - q)) if q else 1.0 for q in qs] for n in POSITIVE}
    best, best_recall = {n: 1.0 for n in POSITIVE}, -1.0
    for th in cand["harmful"]:
        for ti in cand["injection"]:
            b = _blocked(p, scores, {"harmful": th, "injection": ti})
            if np.mean([b[g].mean() for g in ben_g]) > target_fpr:
                break
            recall = np.mean([np.mean([b[g].mean() for g in pos_g[n]]) for n in POSITIVE if pos_g[n]])
            if recall > best_recall:
                best, best_recall = {"harmful": th, "injection": ti}, recall
    return {n: float(np.clip(v, 0.02, 0.999)) for n, v in best.items()}


def loso_table(p: Prepared, scores: dict, trained: set[str], target_fpr: float) -> dict:
    """Per held-out source: block rate at the operating point and at 1/3/5% mean benign FPR."""
    points = {f"{f:.0%}": operating_point(p, scores, f) for f in FPR_POINTS}
    op = operating_point(p, scores, target_fpr)
    sources = np.array([r.source for r in p.rows])
    cats = np.array([r.category for r in p.rows])
    blocked = _blocked(p, scores, op)
    at = {k: _blocked(p, scores, t) for k, t in points.items()}
    rows = []
    for s in sorted(set(sources)):
        for cat in ("harmful", "injection", "benign", "benign_tricky"):
            idx = np.flatnonzero((sources == s) & (cats == cat))
            if len(idx):
                rows.append({"source": s, "category": cat, "n": int(len(idx)),
                             "trained_in_shipped": s in trained, "licence": licence(s)[0],
                             "blocked": round(float(blocked[idx].mean()), 4),
                             **{f"blocked_at_{k}": round(float(b[idx].mean()), 4) for k, b in at.items()}})

    def summary(cat, key="blocked"):
        xs = [r[key] for r in rows if r["category"] in cat]
        return {"mean": round(float(np.mean(xs)), 4), "worst": round(float(min(xs) if cat[0] in POSITIVE
                                                                          else max(xs)), 4),
                "sources": len(xs)} if xs else None

    keys = ["blocked", *(f"blocked_at_{k}" for k in points)]
    return {"target_fpr": target_fpr, "raw_thresholds": op, "raw_thresholds_at": points, "rows": rows,
            "summary": {k: {"benign_block_rate": summary(BENIGN, k), "harmful_recall": summary(("harmful",), k),
                            "injection_recall": summary(("injection",), k)} for k in keys}}


def format_loso(t: dict) -> str:
    pts = [k for k in t["raw_thresholds_at"]]
    head = "| source | category | n | licence | in shipped | blocked | " + " | ".join(f"at {k}" for k in pts) + " |"
    lines = [head, "|---" * (6 + len(pts)) + "|"]
    for r in t["rows"]:
        lines.append(f"| {r['source']} | {r['category']} | {r['n']} | {r['licence']} | "
                     f"{'yes' if r['trained_in_shipped'] else 'no'} | {r['blocked']:.3f} | "
                     + " | ".join(f"{r[f'blocked_at_{k}']:.3f}" for k in pts) + " |")
    lines += ["", "| operating point | benign block rate mean / worst | harmful recall mean / worst | "
              "injection recall mean / worst |", "|---|---|---|---|"]
    for k, s in t["summary"].items():
        cells = [f"{s[m]['mean']:.3f} / {s[m]['worst']:.3f}" if s[m] else "-"
                 for m in ("benign_block_rate", "harmful_recall", "injection_recall")]
        name = f"target {t['target_fpr']:.0%}" if k == "blocked" else k.replace("blocked_at_", "")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def category_namer(seed: int) -> clf.Detector:
    """Which harmful category a text is closest to (weapons, cyber, ...): a multinomial logistic
    regression over this repository's hand-written categorised requests (it names, never decides)."""
    from sklearn.linear_model import LogisticRegression

    pairs = harmful_examples()
    m = LogisticRegression(C=C, solver="lbfgs", max_iter=1000, random_state=seed).fit(
        clf.featurize([t for t, _ in pairs]), [c for _, c in pairs])
    return clf.Detector(_f16(m.coef_), m.intercept_.astype(np.float32), 0.5, tuple(str(c) for c in m.classes_))


def known_words(rows: list[Row], min_rows: int = 3) -> list[str]:
    from collections import Counter

    from guardrails.guard_data import NOT_ENGLISH

    df = Counter(w for r in rows if not any(k in r.source for k in NOT_ENGLISH) for w in clf.words(r.text))
    return [w for w, n in df.items() if n >= min_rows and w.isascii()]


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def run_loso(data_root, kind: str = "logreg", target_fpr: float = 0.03, seed: int = 0,
             sources: list[str] | None = None) -> tuple[Prepared, dict, dict, set]:
    by_source = load_rows(data_root, seed=seed)
    if sources:
        by_source = {s: rs for s, rs in by_source.items() if s in sources}
    p = prepare([r for rs in by_source.values() for r in rs])
    scores, trained = heldout_scores(p, kind, seed)
    return p, scores, loso_table(p, scores, trained, target_fpr), trained


def train_model(data_root, model_dir, kind: str = "logreg", target_fpr: float = 0.03, seed: int = 0,
                sources: list[str] | None = None) -> tuple[dict, dict[str, clf.Detector]]:
    """LOSO table, operating point, then the detectors on every trainable source; writes `model_dir`.
    `sources` restricts the data to those sources (tests train on a slice)."""
    namer = category_namer(seed)
    p, scores, table, trained = run_loso(data_root, kind, target_fpr, seed, sources)
    idx = np.flatnonzero([r.source in trained for r in p.rows])
    dets = fit_detectors(p, idx, kind, seed)
    for n, d in dets.items():
        d.raw_threshold = table["raw_thresholds"][n]
    dets["harmful_category"] = namer
    by_source: dict[str, list[Row]] = {}
    for r in p.rows:
        by_source.setdefault(r.source, []).append(r)
    config = {"version": Path(model_dir).name, "classifier": kind, "C": C, "seed": seed,
              "target_fpr": target_fpr, "commit": _commit(),
              "command": f"d2d guard train --model-dir {model_dir} --set classifier={kind} "
                         f"--set target_fpr={target_fpr} --set seed={seed}"}
    clf.save(Path(model_dir), config, dets, known_words([p.rows[i] for i in idx]), table,
             manifest(by_source, trained))
    return table, dets
