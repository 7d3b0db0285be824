"""Fine-tuning dataset formats: detect, validate with line numbers, convert to canonical records.

Accepted per line (JSONL, or one JSON array as a convenience):
- OpenAI chat SFT `{"messages": [...], "tools"?: [...]}` (assistant turns may carry `weight` 0|1) -> `chat`
- question/answer `{"question", "answer", "system"?}` and alpaca `{"instruction", "input"?, "output"}` -> `chat`
- continued pretraining `{"text": ...}` -> `text`
- OpenAI DPO `{"input": {"messages"}, "preferred_output", "non_preferred_output"}` and
  `{"prompt", "chosen", "rejected"}` (strings or message lists) -> `preference`
- retrieval pairs `{"query", "positive", "negative"?}` (strings) -> `pairs` (the `embedding` method)
Canonical records are documented in docs/dev/CONTRACTS.md. Pure Python: no tokenizer is needed; token
counts are a cheap estimate unless the caller passes `count_tokens`.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Format = Literal["chat", "text", "preference", "pairs"]
FORMATS: tuple[str, ...] = ("chat", "text", "preference", "pairs")
# Source kinds a record can be written in, and the canonical format each converts to.
KINDS: dict[str, Format] = {
    "openai_chat": "chat",
    "qa": "chat",
    "alpaca": "chat",
    "text": "text",
    "openai_dpo": "preference",
    "prompt_chosen_rejected": "preference",
    "query_positive": "pairs",
}
ROLES = frozenset({"system", "user", "assistant", "tool"})
MESSAGE_OVERHEAD = 4  # tokens a chat template adds around each turn (role markers, separators)
MAX_PROBLEMS = 20
MAX_DEPTH = 64  # JSON nesting a record may have; chat records need 4
_TOO_DEEP = object()
PROGRESS_EVERY = 1000  # lines between progress callbacks
MIN_RECOMMENDED = 10  # OpenAI's minimum number of training examples
TOKEN_ESTIMATE = "estimate: 1 token per 6 letters of a word, 1 per punctuation mark or CJK/Hangul character"


class DatasetError(ValueError):
    """Raised when a dataset has problems; `problems` holds `{line, message}` dicts (line 0 = whole file)."""

    def __init__(self, problems: list[dict[str, Any]], *, source: str = "dataset", total: int | None = None) -> None:
        self.problems = problems
        self.source = source
        self.total = total if total is not None else len(problems)
        super().__init__(self.summary())

    def summary(self) -> str:
        """Return a readable, line-numbered list of the problems and what to do."""
        head = f"{self.source} has {self.total} problem{'s' if self.total != 1 else ''}"
        lines = [f"  line {p['line']}: {p['message']}" if p["line"] else f"  {p['message']}" for p in self.problems]
        more = [f"  ... and {self.total - len(self.problems)} more"] if self.total > len(self.problems) else []
        return "\n".join([head + ":", *lines, *more, "Fix these lines and upload again."])


@dataclass
class LoadedDataset:
    """A validated dataset: its canonical format, converted records and statistics report."""

    format: Format
    records: list[dict[str, Any]]
    report: dict[str, Any] = field(default_factory=dict)


class _Problem(Exception):
    """One record's problem (internal: collected into DatasetError)."""


# token counting ---------------------------------------------------------------------------------
_PIECES = re.compile(r"[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u9fff\uac00-\ud7af]|[^\W_]+|[^\w\s]|_")


def approx_tokens(text: str) -> int:
    """Estimate a BPE token count without a tokenizer (common words are one token, CJK one per char)."""
    return sum(math.ceil(len(p) / 6) for p in _PIECES.findall(text))


# public API ---------------------------------------------------------------------------------------
def load_dataset(
    path: Path | str,
    *,
    format: str | None = None,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    max_problems: int = MAX_PROBLEMS,
    allow_prompt_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> LoadedDataset:
    """Read and validate a dataset file; raise DatasetError naming each bad line."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DatasetError([{"line": 0, "message": f"cannot read {path}: {e.strerror or e}"}], source=str(path)) from e
    return parse_dataset(
        data,
        source=path.name,
        format=format,
        max_tokens=max_tokens,
        count_tokens=count_tokens,
        max_problems=max_problems,
        allow_prompt_only=allow_prompt_only,
        progress=progress,
    )


def parse_dataset(
    data: bytes | str,
    *,
    source: str = "dataset",
    format: str | None = None,
    max_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    max_problems: int = MAX_PROBLEMS,
    allow_prompt_only: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> LoadedDataset:
    """Validate dataset bytes or text (uploads, inline JSONL) and convert them to canonical records.

    `progress(done, total)` is called every PROGRESS_EVERY lines and once at the end (for progress bars).
    """
    if format is not None and format not in FORMATS and format not in KINDS:
        raise ValueError(f"unknown dataset format {format!r}; use one of {', '.join(FORMATS + tuple(KINDS))}")
    want = KINDS.get(format, format) if format else None
    counter = count_tokens or approx_tokens
    problems: list[dict[str, Any]] = []
    total = 0

    def problem(line: int, message: str) -> None:
        nonlocal total
        total += 1
        if len(problems) < max_problems:
            problems.append({"line": line, "message": message})

    text = _decode(data, source)
    records: list[dict[str, Any]] = []
    stats: list[dict[str, int]] = []
    kinds: Counter[str] = Counter()
    first: tuple[int, Format] | None = None
    total_lines, items = _items(text, problem)
    for line, obj in items:
        if progress and line % PROGRESS_EVERY == 0:
            progress(line, total_lines)
        try:
            if not isinstance(obj, dict):
                raise _Problem(f"expected a JSON object, got {_json_type(obj)}")
            kind = detect_kind(obj)
            canon = KINDS[kind]
            if want and canon != want:
                raise _Problem(
                    f"this is a {canon} record ({kind}) but the dataset format is {want}; use {_EXPECT[want]}"
                )
            if first is None:
                first = (line, canon)
            elif canon != first[1]:
                raise _Problem(
                    f"mixed formats: this is a {canon} record ({kind}) but line {first[0]} is "
                    f"{first[1]}; put one format in a file"
                )
            record = _CONVERT[kind](obj, allow_prompt_only)
            stat = _stats(canon, record, counter)
            if max_tokens and stat["tokens"] > max_tokens:
                raise _Problem(
                    f"about {stat['tokens']} tokens, longer than the model's context of {max_tokens}; "
                    "shorten or split this example"
                )
        except _Problem as e:
            problem(line, str(e))
            continue
        kinds[kind] += 1
        records.append(record)
        stats.append(stat)
    if progress:
        progress(total_lines, total_lines)
    if total == 0 and not records:
        problem(0, "the file is empty: put one JSON object per line (see docs/guide for the formats)")
    if total:
        raise DatasetError(problems, source=source, total=total)
    assert first is not None
    fmt = first[1]
    report = _report(fmt, kinds, stats, estimated=count_tokens is None)
    return LoadedDataset(fmt, records, report)


def detect_kind(obj: dict[str, Any]) -> str:
    """Return which source format a record is written in, or raise naming the fields each format needs."""
    keys = set(obj)
    if "messages" in keys:
        return "openai_chat"
    if {"preferred_output", "non_preferred_output"} & keys:
        return "openai_dpo"
    if {"chosen", "rejected"} & keys:
        return "prompt_chosen_rejected"
    if "text" in keys:
        return "text"
    if {"question", "answer"} & keys:
        return "qa"
    if {"instruction", "output"} & keys:
        return "alpaca"
    if {"query", "positive"} & keys:
        return "query_positive"
    shown = ", ".join(sorted(keys)[:8]) or "none"
    raise _Problem(
        f"unrecognised record (fields: {shown}); a record needs one of: messages | text | "
        "input+preferred_output+non_preferred_output | prompt+chosen+rejected | question+answer | "
        "instruction+output | query+positive"
    )


def chat_to_text(record: dict[str, Any]) -> dict[str, str]:
    """Flatten a chat record to a `text` record for continued pretraining (turns joined by blank lines)."""
    return {"text": "\n\n".join(m["content"] for m in record["messages"] if m.get("content"))}


def split_prompt_reference(record: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """Split a chat record for rejection sampling: turns before the last assistant turn, and its answer."""
    msgs = record["messages"]
    last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
    if last is None:
        return list(msgs), None
    return list(msgs[:last]), msgs[last]["content"]


# reading ----------------------------------------------------------------------------------------
def _decode(data: bytes | str, source: str) -> str:
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DatasetError(
            [
                {
                    "line": line,
                    "message": f"not UTF-8 (byte 0x{data[e.start]:02x} at column {col}); save the file as UTF-8",
                }
            ],
            source=source,
        ) from e


def _items(text: str, problem: Callable[[int, str], None]) -> tuple[int, Iterator[tuple[int, Any]]]:
    """Return the number of lines (or array items) and an iterator of (line number, parsed value)."""
    if text.lstrip().startswith("["):
        try:
            array = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            array = None  # not one JSON array: maybe JSONL whose first line is an array; read line by line
        if isinstance(array, list) and json_depth(array) <= MAX_DEPTH + 1:
            return len(array), enumerate(array, start=1)
    lines = text.splitlines()
    return len(lines), _lines(lines, problem)


def _lines(lines: list[str], problem: Callable[[int, str], None]) -> Iterator[tuple[int, Any]]:
    for n, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as e:
            problem(n, f"bad JSON ({e.msg} at column {e.colno}); each line must be one complete JSON object")
            continue
        except RecursionError:  # regression for issue #12: this was a 500
            value = _TOO_DEEP
        if value is _TOO_DEEP or json_depth(value) > MAX_DEPTH:
            problem(n, f"JSON nested deeper than {MAX_DEPTH} levels; flatten the record")
            continue
        yield n, value


def json_depth(value: Any) -> int:
    """Return how deeply lists and objects nest in a parsed JSON value (iteratively: no recursion limit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


def _json_type(obj: Any) -> str:
    return {list: "an array", str: "a string", int: "a number", float: "a number", bool: "true/false"}.get(
        type(obj), "null"
    )


# conversion -------------------------------------------------------------------------------------
def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) for p in value):
        if any(p.get("type", "text") != "text" for p in value):
            raise _Problem(f"{where} has a non-text content part; only text parts can be trained here")
        return "".join(str(p.get("text", "")) for p in value)
    if value is None:
        return ""
    raise _Problem(f"{where} content must be a string or a list of text parts, got {_json_type(value)}")


def _message(m: Any, where: str) -> dict[str, Any]:
    if not isinstance(m, dict):
        raise _Problem(f"{where} must be an object with role and content, got {_json_type(m)}")
    role = m.get("role")
    if role == "developer":
        role = "system"
    if role not in ROLES:
        raise _Problem(f"{where} has unknown role {role!r}; use system, user, assistant or tool")
    if "content" not in m and not m.get("tool_calls"):
        raise _Problem(f"{where} ({role}) is missing content")
    out: dict[str, Any] = {"role": role, "content": _content(m.get("content"), where)}
    if role == "assistant" and not out["content"].strip() and not m.get("tool_calls"):
        raise _Problem(f"{where} is an empty assistant turn; write the answer or remove the turn")
    if "weight" in m:
        if role != "assistant":
            raise _Problem(f"{where} ({role}) has a weight; only assistant turns can be weighted")
        if m["weight"] not in (0, 1) or isinstance(m["weight"], bool):
            raise _Problem(f"{where} weight must be 0 or 1, got {m['weight']!r}")
        out["weight"] = int(m["weight"])
    for key in ("name", "tool_calls", "tool_call_id"):
        if key in m:
            out[key] = m[key]
    return out


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise _Problem(f"{where} must be a non-empty list of messages")
    return [_message(m, f"{where}[{i}]") for i, m in enumerate(value)]


def _check_chat(msgs: list[dict[str, Any]], allow_prompt_only: bool) -> None:
    assistant = [m for m in msgs if m["role"] == "assistant"]
    if not assistant and not allow_prompt_only:
        raise _Problem("no assistant turn: add the answer the model should learn as a message with role assistant")
    if assistant and all(m.get("weight", 1) == 0 for m in assistant):
        raise _Problem("every assistant turn has weight 0, so nothing would be trained; set weight 1 on one")


def _from_chat(obj: dict[str, Any], allow_prompt_only: bool) -> dict[str, Any]:
    msgs = _messages(obj["messages"], "messages")
    _check_chat(msgs, allow_prompt_only)
    record: dict[str, Any] = {"messages": msgs}
    if obj.get("tools") is not None:
        if not isinstance(obj["tools"], list):
            raise _Problem("tools must be a list of tool definitions")
        record["tools"] = obj["tools"]
    return record


def _string(obj: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise _Problem(f"missing field {key!r}" if key not in obj else f"{key!r} must be a string")
    if required and not value.strip():
        raise _Problem(f"{key!r} is empty")
    return value


def _from_qa(obj: dict[str, Any], _: bool) -> dict[str, Any]:
    msgs = [{"role": "system", "content": _string(obj, "system")}] if obj.get("system") else []
    msgs += [
        {"role": "user", "content": _string(obj, "question")},
        {"role": "assistant", "content": _string(obj, "answer")},
    ]
    return {"messages": msgs}


def _from_alpaca(obj: dict[str, Any], _: bool) -> dict[str, Any]:
    extra = _string(obj, "input", required=False)
    user = _string(obj, "instruction") + (f"\n\n{extra}" if extra.strip() else "")
    return {
        "messages": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": _string(obj, "output")},
        ]
    }


def _from_text(obj: dict[str, Any], _: bool) -> dict[str, Any]:
    return {"text": _string(obj, "text")}


def _answer(value: Any, where: str) -> list[dict[str, Any]]:
    msgs = [{"role": "assistant", "content": value}] if isinstance(value, str) else value
    out = _messages(msgs, where)
    if out[-1]["role"] != "assistant":
        raise _Problem(f"{where} must end with an assistant message")
    return [{k: v for k, v in m.items() if k != "weight"} for m in out]


def _preference(prompt: list[dict[str, Any]], chosen: Any, rejected: Any, names: tuple[str, str]) -> dict[str, Any]:
    pair = {"prompt": prompt, "chosen": _answer(chosen, names[0]), "rejected": _answer(rejected, names[1])}
    if pair["chosen"] == pair["rejected"]:
        raise _Problem(f"{names[0]} and {names[1]} are identical, so the pair teaches nothing; fix or drop it")
    return pair


def _from_openai_dpo(obj: dict[str, Any], _: bool) -> dict[str, Any]:
    for key in ("input", "preferred_output", "non_preferred_output"):
        if key not in obj:
            raise _Problem(f"missing field {key!r} (OpenAI DPO needs input, preferred_output, non_preferred_output)")
    if not isinstance(obj["input"], dict):
        raise _Problem("'input' must be an object with messages")
    prompt = _messages(obj["input"].get("messages"), "input.messages")
    return _preference(
        prompt,
        obj["preferred_output"],
        obj["non_preferred_output"],
        ("preferred_output", "non_preferred_output"),
    )


def _from_prompt_chosen_rejected(obj: dict[str, Any], _: bool) -> dict[str, Any]:
    for key in ("prompt", "chosen", "rejected"):
        if key not in obj:
            raise _Problem(f"missing field {key!r} (preference records need prompt, chosen, rejected)")
    prompt = obj["prompt"]
    if isinstance(prompt, str):
        if not prompt.strip():
            raise _Problem("'prompt' is empty")
        prompt = [{"role": "user", "content": prompt}]
    return _preference(_messages(prompt, "prompt"), obj["chosen"], obj["rejected"], ("chosen", "rejected"))


def _from_query_positive(obj: dict[str, Any], _: bool) -> dict[str, Any]:
    unknown = sorted(set(obj) - {"query", "positive", "negative"})
    if unknown:
        raise _Problem(f"unknown fields {unknown} in a pairs record; use query, positive and optional negative")
    for key in ("query", "positive"):
        if key not in obj:
            raise _Problem(f"missing field {key!r} (pairs records need query and positive, negative is optional)")
    record = {"query": _string(obj, "query"), "positive": _string(obj, "positive")}
    if obj.get("negative") is not None:
        record["negative"] = _string(obj, "negative")
        if " ".join(record["negative"].split()) == " ".join(record["positive"].split()):
            raise _Problem("'negative' is the same text as 'positive', so the pair teaches nothing; fix or drop it")
    return record


_CONVERT: dict[str, Callable[[dict[str, Any], bool], dict[str, Any]]] = {
    "openai_chat": _from_chat,
    "qa": _from_qa,
    "alpaca": _from_alpaca,
    "text": _from_text,
    "openai_dpo": _from_openai_dpo,
    "prompt_chosen_rejected": _from_prompt_chosen_rejected,
    "query_positive": _from_query_positive,
}
_EXPECT = {
    "chat": "records with messages (or question/answer, instruction/output)",
    "text": "records with text",
    "preference": "records with input/preferred_output/non_preferred_output or prompt/chosen/rejected",
    "pairs": "records with query, positive and optional negative",
}


# statistics -------------------------------------------------------------------------------------
def _turn_tokens(msgs: list[dict[str, Any]], count: Callable[[str], int]) -> list[int]:
    return [count(m["content"]) + MESSAGE_OVERHEAD for m in msgs]


def _stats(fmt: str, record: dict[str, Any], count: Callable[[str], int]) -> dict[str, int]:
    if fmt == "text":
        n = count(record["text"])
        return {"tokens": n, "assistant_tokens": 0, "turns": 0}
    if fmt == "pairs":  # each text is encoded on its own: the longest one sets max_length
        texts = [record["query"], record["positive"], record.get("negative") or ""]
        return {"tokens": max(count(t) for t in texts), "negatives": int("negative" in record)}
    if fmt == "chat":
        msgs = record["messages"]
        per = _turn_tokens(msgs, count)
        trained = sum(t for m, t in zip(msgs, per, strict=True) if m["role"] == "assistant" and m.get("weight", 1))
        answered = any(m["role"] == "assistant" for m in msgs)
        return {
            "tokens": sum(per),
            "assistant_tokens": trained,
            "turns": len(msgs),
            "prompt_only": int(not answered),
        }
    prompt = sum(_turn_tokens(record["prompt"], count))
    chosen, rejected = (
        sum(_turn_tokens(record["chosen"], count)),
        sum(_turn_tokens(record["rejected"], count)),
    )
    return {
        "tokens": prompt + max(chosen, rejected),
        "assistant_tokens": chosen + rejected,
        "turns": len(record["prompt"]) + 1,
    }


def _summary(values: list[int]) -> dict[str, float | int]:
    ordered = sorted(values)
    p95 = ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]
    return {
        "min": ordered[0],
        "mean": round(sum(ordered) / len(ordered), 1),
        "max": ordered[-1],
        "p95": p95,
        "total": sum(ordered),
    }


def _report(fmt: Format, kinds: Counter[str], stats: list[dict[str, int]], *, estimated: bool) -> dict[str, Any]:
    report: dict[str, Any] = {
        "format": fmt,
        "source_formats": dict(kinds),
        "examples": len(stats),
        "tokens": _summary([s["tokens"] for s in stats]),
        "token_count": TOKEN_ESTIMATE if estimated else "tokenizer",
        "warnings": [],
    }
    if fmt == "pairs":
        report["negatives"] = sum(s["negatives"] for s in stats)
    elif fmt != "text":
        report["assistant_tokens"] = _summary([s["assistant_tokens"] for s in stats])
        report["turns"] = _summary([s["turns"] for s in stats])
    if fmt == "chat":
        report["prompt_only"] = sum(s["prompt_only"] for s in stats)  # only non-zero with allow_prompt_only
    if len(stats) < MIN_RECOMMENDED:
        plural = "s" if len(stats) != 1 else ""
        report["warnings"].append(
            f"only {len(stats)} example{plural}; at least {MIN_RECOMMENDED} are needed for a "
            "meaningful run and about 50 are a good start"
        )
    return report


def format_report(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Return the report as (label, value) rows for a table (CLI and tool output)."""
    rows = [
        (
            "format",
            f"{report['format']} ({', '.join(f'{k}: {v}' for k, v in report['source_formats'].items())})",
        ),
        ("examples", str(report["examples"])),
    ]
    for key in ("tokens", "assistant_tokens", "turns"):
        if key in report:
            s = report[key]
            rows.append(
                (
                    key,
                    f"min {s['min']} · mean {s['mean']} · p95 {s['p95']} · max {s['max']} · total {s['total']}",
                )
            )
    rows.append(("token count", report["token_count"]))
    rows += [("warning", w) for w in report["warnings"]]
    return rows
