"""Preference pairs: TRL-convention JSONL, a converter from Anthropic HH transcripts, a held-out split.

    .venv/bin/python -m pipeline.chat.prefs ../shared/data/prefs/hh_rlhf_harmless_base_test.jsonl.gz OUT_DIR

One pair per line, as TRL's conversational preference format with an explicit prompt:
`{"prompt": [{"role": "user", "content": ...}, ...], "chosen": [{"role": "assistant", ...}],
"rejected": [{"role": "assistant", ...}]}`. Readers also accept `messages` for `prompt`,
a plain string prompt (one user turn), plain string replies, and raw HH rows
(`{"chosen": "\\n\\nHuman: …\\n\\nAssistant: …", "rejected": …}`). Rows that cannot be
used are counted under a reason and kept aside, never dropped silently.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

_TURN_RE = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_ROLE = {"Human": "user", "Assistant": "assistant"}


@dataclass
class PrefPair:
    prompt: list[dict]
    chosen: str
    rejected: str

    def to_row(self) -> dict:
        return {
            "prompt": self.prompt,
            "chosen": [{"role": "assistant", "content": self.chosen}],
            "rejected": [{"role": "assistant", "content": self.rejected}],
        }


@dataclass
class PairSet:
    pairs: list[PrefPair] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    """The rows set aside, each with its `reason`."""

    @property
    def reasons(self) -> dict[str, int]:
        return dict(Counter(r["reason"] for r in self.rejects))


def parse_hh_transcript(text: str) -> list[dict] | None:
    """`"\\n\\nHuman: a\\n\\nAssistant: b"` → OpenAI-style messages, or None if no turns."""
    marks = list(_TURN_RE.finditer(text or ""))
    if not marks or text[: marks[0].start()].strip():
        return None
    msgs = []
    for m, nxt in zip(marks, marks[1:] + [None], strict=True):
        content = text[m.end() : nxt.start() if nxt else len(text)].strip()
        msgs.append({"role": _ROLE[m.group(1)], "content": content})
    return msgs


def from_hh(row: dict) -> tuple[PrefPair | None, str]:
    """One HH row → (pair, "") or (None, reason). Both sides must share all but the last turn."""
    chosen, rejected = parse_hh_transcript(row.get("chosen", "")), parse_hh_transcript(row.get("rejected", ""))
    if chosen is None or rejected is None:
        return None, "hh_not_a_transcript"
    if chosen[-1]["role"] != "assistant" or rejected[-1]["role"] != "assistant":
        return None, "hh_last_turn_not_assistant"
    if chosen[:-1] != rejected[:-1]:
        return None, "hh_prompts_differ"
    if not chosen[:-1]:
        return None, "hh_empty_prompt"
    return _checked(chosen[:-1], chosen[-1]["content"], rejected[-1]["content"])


def _reply(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and isinstance(value[-1], dict) and value[-1].get("role") == "assistant":
        return value[-1].get("content")
    return None


def _checked(prompt: list[dict], chosen: str | None, rejected: str | None) -> tuple[PrefPair | None, str]:
    if chosen is None or rejected is None:
        return None, "reply_not_assistant_text"
    if not chosen.strip() or not rejected.strip():
        return None, "empty_reply"
    if chosen.strip() == rejected.strip():
        return None, "identical_replies"
    return PrefPair(prompt, chosen, rejected), ""


def from_row(row: dict) -> tuple[PrefPair | None, str]:
    """Any accepted row shape → (pair, "") or (None, reason)."""
    if not isinstance(row, dict) or "chosen" not in row or "rejected" not in row:
        return None, "missing_chosen_or_rejected"
    prompt = row.get("prompt", row.get("messages"))
    if prompt is None:
        if isinstance(row["chosen"], str):
            return from_hh(row)
        return None, "missing_prompt"
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    if not (isinstance(prompt, list) and prompt and all(isinstance(m, dict) and "role" in m for m in prompt)):
        return None, "bad_prompt"
    return _checked(prompt, _reply(row["chosen"]), _reply(row["rejected"]))


def _open(path: str | Path):
    return gzip.open(path, "rt", encoding="utf-8") if str(path).endswith(".gz") else open(path, encoding="utf-8")


def load_pairs(path: str | Path, limit: int | None = None) -> PairSet:
    """Read a preference JSONL (plain or .gz, TRL or HH rows); bad lines are set aside with a reason."""
    out = PairSet()
    with _open(path) as f:
        for lineno, line in enumerate(f, 1):
            if limit is not None and len(out.pairs) >= limit:
                break
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                out.rejects.append({"line": lineno, "reason": "bad_json"})
                continue
            pair, reason = from_row(row)
            if pair is None:
                out.rejects.append({"line": lineno, "reason": reason})
            else:
                out.pairs.append(pair)
    return out


def is_heldout(pair: PrefPair, fraction: float) -> bool:
    """Stable split by a hash of the prompt, so a prompt's pairs stay on one side."""
    key = json.dumps(pair.prompt, sort_keys=True).encode()
    h = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")
    return h % 10_000 < fraction * 10_000


def split_pairs(pairs: list[PrefPair], heldout_fraction: float) -> tuple[list[PrefPair], list[PrefPair]]:
    train = [p for p in pairs if not is_heldout(p, heldout_fraction)]
    heldout = [p for p in pairs if is_heldout(p, heldout_fraction)]
    return train, heldout


def write_pairs(path: str | Path, pairs: list[PrefPair]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            f.write(json.dumps(p.to_row(), ensure_ascii=False) + "\n")


def convert(source: str | Path, out_dir: str | Path, heldout_fraction: float = 0.1) -> dict:
    """Source file → OUT/train.jsonl, heldout.jsonl, rejects.jsonl, stats.json; returns the stats."""
    out = Path(out_dir)
    data = load_pairs(source)
    train, heldout = split_pairs(data.pairs, heldout_fraction)
    write_pairs(out / "train.jsonl", train)
    write_pairs(out / "heldout.jsonl", heldout)
    (out / "rejects.jsonl").write_text("".join(json.dumps(r) + "\n" for r in data.rejects))
    stats = {"source": str(source), "pairs": len(data.pairs), "train": len(train),
             "heldout": len(heldout), "rejected": data.reasons}
    (out / "stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


if __name__ == "__main__":
    print(json.dumps(convert(sys.argv[1], sys.argv[2]), indent=2))
