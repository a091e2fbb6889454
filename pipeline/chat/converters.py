"""Conversation converters: ShareGPT, Anthropic HH, GSM8K, Alpaca, OpenAI JSONL → `{"messages": [...]}`.

    from pipeline.chat.converters import load_conversations
    convs, report = load_conversations("../shared/data/chat/sharegpt_identity_500.json", "sharegpt")
    report.counts      # {"rows": 500, "kept": 500, ...}; rejects: report.rejects[i] = {"reason", "row"}

The canonical form is OpenAI's: `{"messages": [{"role": "system"|"user"|"assistant",
"content": str}, ...]}`. A converter is one pure function `row -> messages` that
raises `MalformedRow(reason)`; the driver turns reasons into counters and keeps
the bad rows aside (datatrove's drop-reason idea), so bad input never crashes a
stage and never vanishes. Text is never altered beyond the format's own markup:
special-token look-alikes in user text stay plain strings here, and the
tokenizer's special-token-safe encoding keeps them plain in ids.
"""

from __future__ import annotations

import gzip
import io
import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from pipeline.chat.arithmetic import format_answer

ROLES = ("system", "user", "assistant")


class MalformedRow(ValueError):
    """A row this format cannot turn into a conversation; `reason` becomes a counter key."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def validate_messages(messages) -> list[dict]:
    """Check a message list against the canonical shape; return a clean copy or raise."""
    if not isinstance(messages, list) or not messages:
        raise MalformedRow("no_messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise MalformedRow("message_not_object")
        role, content = m.get("role"), m.get("content")
        if role not in ROLES:
            raise MalformedRow("unknown_role")
        if not isinstance(content, str):
            raise MalformedRow("content_not_string")
        if not content.strip():
            raise MalformedRow("empty_content")
        if role == "system" and i != 0:
            raise MalformedRow("system_not_first")
        out.append({"role": role, "content": content})
    if not any(m["role"] == "assistant" for m in out):
        raise MalformedRow("no_assistant_turn")
    if not any(m["role"] == "user" for m in out):
        raise MalformedRow("no_user_turn")
    return out


def _need(row, key: str):
    if not isinstance(row, dict):
        raise MalformedRow("row_not_object")
    if key not in row or row[key] in (None, ""):
        raise MalformedRow(f"missing_{key}")
    return row[key]


def from_openai(row) -> list[dict]:
    return validate_messages(_need(row, "messages"))


_SHAREGPT_ROLES = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant", "bard": "assistant",
    "bing": "assistant", "model": "assistant",
    "system": "system",
}


def from_sharegpt(row) -> list[dict]:
    turns = _need(row, "conversations")
    if not isinstance(turns, list):
        raise MalformedRow("conversations_not_list")
    msgs = []
    for t in turns:
        if not isinstance(t, dict):
            raise MalformedRow("message_not_object")
        role = _SHAREGPT_ROLES.get(str(t.get("from", "")).lower())
        if role is None:
            raise MalformedRow("unknown_role")
        msgs.append({"role": role, "content": t.get("value")})
    return validate_messages(msgs)


_HH_SPLIT = re.compile(r"\n\n(Human|Assistant):[ ]?")


def parse_hh(transcript: str) -> list[dict]:
    """`"\\n\\nHuman: hi\\n\\nAssistant: hello"` → user/assistant messages (not validated)."""
    if not isinstance(transcript, str):
        raise MalformedRow("hh_not_text")
    parts = _HH_SPLIT.split(transcript)
    if len(parts) < 3 or parts[0].strip():
        raise MalformedRow("hh_unparseable")
    msgs = []
    for speaker, text in zip(parts[1::2], parts[2::2], strict=False):
        msgs.append({"role": "user" if speaker == "Human" else "assistant", "content": text.strip()})
    return msgs


def from_hh(row) -> list[dict]:
    """Anthropic HH: the `chosen` transcript, which must end on an assistant turn."""
    msgs = parse_hh(_need(row, "chosen"))
    if msgs[-1]["role"] != "assistant":
        raise MalformedRow("hh_ends_without_assistant")
    return validate_messages(msgs)


_CALC = re.compile(r"<<[^<>]*>>")
_GSM_FINAL = re.compile(r"\n?####\s*(.+?)\s*$")


def from_gsm8k(row) -> list[dict]:
    """GSM8K: reasoning with calculator notes removed, then our fixed answer line."""
    question, answer = _need(row, "question"), _need(row, "answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        raise MalformedRow("content_not_string")
    m = _GSM_FINAL.search(answer)
    if not m:
        raise MalformedRow("gsm8k_no_final_answer")
    try:
        final = int(m.group(1).replace(",", ""))
    except ValueError:
        raise MalformedRow("gsm8k_final_not_integer") from None
    reasoning = _CALC.sub("", answer[: m.start()]).strip()
    reply = f"{reasoning}\n{format_answer(final)}" if reasoning else format_answer(final)
    return validate_messages([{"role": "user", "content": question}, {"role": "assistant", "content": reply}])


def from_alpaca(row) -> list[dict]:
    instruction, output = _need(row, "instruction"), _need(row, "output")
    extra = row.get("input") or ""
    if not all(isinstance(x, str) for x in (instruction, output, extra)):
        raise MalformedRow("content_not_string")
    prompt = f"{instruction.strip()}\n\n{extra.strip()}" if extra.strip() else instruction
    return validate_messages([{"role": "user", "content": prompt}, {"role": "assistant", "content": output}])


#: format name -> converter; `d2d sft --format NAME` picks one.
CONVERTERS: dict[str, Callable[[object], list[dict]]] = {
    "openai": from_openai,
    "sharegpt": from_sharegpt,
    "hh": from_hh,
    "gsm8k": from_gsm8k,
    "alpaca": from_alpaca,
}


@dataclass
class ConvertReport:
    counts: Counter = field(default_factory=Counter)
    """`rows`, `kept`, and `rejected_<reason>` per reason."""
    rejects: list[dict] = field(default_factory=list)
    """Each rejected row (truncated to a preview) with its reason, for setting aside."""

    def reject(self, reason: str, row) -> None:
        self.counts[f"rejected_{reason}"] += 1
        preview = row if isinstance(row, str) else json.dumps(row, ensure_ascii=False, default=str)
        self.rejects.append({"reason": reason, "row": preview[:2000]})


def iter_rows(text: str) -> Iterator[object]:
    """Rows of a JSON array/object file or of JSONL; an unparseable line yields a `_BadLine`."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            data = json.loads(stripped)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, list):
            yield from data
            return
    for line in io.StringIO(text):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            yield _BadLine(line)


class _BadLine(str):
    """A line that is not JSON (kept as text so it can be reported)."""


def convert_rows(rows: Iterable[object], fmt: str, report: ConvertReport | None = None) -> tuple[list[dict], ConvertReport]:
    if fmt not in CONVERTERS:
        raise ValueError(f"format: {fmt!r} is not one of {', '.join(CONVERTERS)}")
    convert = CONVERTERS[fmt]
    report = report or ConvertReport()
    out = []
    for row in rows:
        report.counts["rows"] += 1
        if isinstance(row, _BadLine):
            report.reject("invalid_json", str(row))
            continue
        try:
            out.append({"messages": convert(row)})
        except MalformedRow as e:
            report.reject(e.reason, row)
            continue
        report.counts["kept"] += 1
    return out, report


def read_text(path: str) -> str:
    """A local or fsspec path, gunzipped when it ends in .gz."""
    import fsspec

    from pipeline.errors import StageError

    try:
        with fsspec.open(path, "rb") as f:
            raw = f.read()
    except (OSError, ValueError) as e:
        raise StageError(f"cannot read {path}: {e}") from None
    if path.endswith(".gz"):
        raw = gzip.decompress(raw)
    return raw.decode("utf-8", errors="replace")


def load_conversations(path: str, fmt: str) -> tuple[list[dict], ConvertReport]:
    """Read `path` in format `fmt`; return canonical conversations and the report."""
    return convert_rows(iter_rows(read_text(path)), fmt)
