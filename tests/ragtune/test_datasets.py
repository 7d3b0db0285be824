"""Dataset formats: every source format converts to its canonical record; every problem names its line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ragtune.datasets import (
    DatasetError,
    approx_tokens,
    chat_to_text,
    format_report,
    load_dataset,
    parse_dataset,
    split_prompt_reference,
)


def jsonl(*rows: Any) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r, ensure_ascii=False) for r in rows) + "\n"


CHAT = {
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris.", "weight": 1},
    ]
}


def problems(text: str | bytes, **kw: Any) -> list[dict[str, Any]]:
    with pytest.raises(DatasetError) as info:
        parse_dataset(text, **kw)
    return info.value.problems


def test_openai_chat_keeps_weights_tools_and_reports_stats(tmp_path: Path) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}]
    multi = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "draft", "weight": 0},
            {"role": "user", "content": "again"},
            {"role": "assistant", "content": [{"type": "text", "text": "final answer"}]},
        ],
        "tools": tools,
    }
    path = tmp_path / "chat.jsonl"
    path.write_text(jsonl(CHAT, multi))
    ds = load_dataset(path)
    assert ds.format == "chat"
    assert ds.records[0] == {"messages": CHAT["messages"]}
    assert ds.records[1]["tools"] == tools
    assert ds.records[1]["messages"][1]["weight"] == 0
    assert ds.records[1]["messages"][3]["content"] == "final answer"
    r = ds.report
    assert r["examples"] == 2 and r["source_formats"] == {"openai_chat": 2}
    assert r["turns"]["min"] == 3 and r["turns"]["max"] == 4
    assert 0 < r["assistant_tokens"]["min"] < r["tokens"]["min"]
    assert r["tokens"]["min"] <= r["tokens"]["mean"] <= r["tokens"]["p95"] <= r["tokens"]["max"]
    assert "estimate" in r["token_count"]
    assert any("only 2 examples" in w for w in r["warnings"])
    assert dict(format_report(r))["examples"] == "2"


def test_qa_and_alpaca_convert_to_chat() -> None:
    ds = parse_dataset(
        jsonl(
            {"question": "2+2?", "answer": "4", "system": "math"},
            {"instruction": "Translate", "input": "bonjour", "output": "hello"},
            {"instruction": "Say hi", "output": "hi"},
        )
    )
    assert ds.format == "chat"
    assert ds.records[0]["messages"] == [
        {"role": "system", "content": "math"},
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]
    assert ds.records[1]["messages"][0] == {"role": "user", "content": "Translate\n\nbonjour"}
    assert ds.records[2]["messages"][0] == {"role": "user", "content": "Say hi"}
    assert ds.report["source_formats"] == {"qa": 1, "alpaca": 2}


def test_text_records_for_cpt_and_json_array() -> None:
    ds = parse_dataset(json.dumps([{"text": "RAG retrieves passages."}, {"text": "LoRA adds adapters."}]))
    assert ds.format == "text" and ds.records == [
        {"text": "RAG retrieves passages."},
        {"text": "LoRA adds adapters."},
    ]
    assert "assistant_tokens" not in ds.report
    assert chat_to_text({"messages": CHAT["messages"]}) == {"text": "Be brief.\n\nCapital of France?\n\nParis."}


def test_preference_formats_convert_to_prompt_chosen_rejected() -> None:
    openai = {
        "input": {"messages": [{"role": "user", "content": "Hi"}], "tools": [], "parallel_tool_calls": True},
        "preferred_output": [{"role": "assistant", "content": "Hello! How can I help?"}],
        "non_preferred_output": [{"role": "assistant", "content": "What."}],
    }
    strings = {"prompt": "Sky colour?", "chosen": "Blue.", "rejected": "Green."}
    conversational = {
        "prompt": [{"role": "user", "content": "Sky colour?"}],
        "chosen": [{"role": "assistant", "content": "Blue."}],
        "rejected": [{"role": "assistant", "content": "Green."}],
    }
    ds = parse_dataset(jsonl(openai, strings, conversational))
    assert ds.format == "preference"
    assert ds.records[0] == {
        "prompt": [{"role": "user", "content": "Hi"}],
        "chosen": [{"role": "assistant", "content": "Hello! How can I help?"}],
        "rejected": [{"role": "assistant", "content": "What."}],
    }
    assert ds.records[1] == ds.records[2]
    assert ds.report["source_formats"] == {"openai_dpo": 1, "prompt_chosen_rejected": 2}


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ("{not json", "bad JSON"),
        ("3", "expected a JSON object, got a number"),
        ('"text"', "expected a JSON object, got a string"),
        ('{"foo": 1}', "unrecognised record"),
        (
            '{"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}',
            "unknown role 'robot'",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "  "}]}',
            "empty assistant turn",
        ),
        ('{"messages": [{"role": "user", "content": "x"}]}', "no assistant turn"),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 0}]}',
            "weight 0",
        ),
        (
            '{"messages": [{"role": "user", "content": "x", "weight": 1}, {"role": "assistant", "content": "y"}]}',
            "only assistant turns can be weighted",
        ),
        (
            '{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "weight": 2}]}',
            "weight must be 0 or 1",
        ),
        ('{"messages": [{"role": "user"}, {"role": "assistant", "content": "y"}]}', "missing content"),
        ('{"messages": []}', "non-empty list"),
        ('{"question": "q"}', "missing field 'answer'"),
        ('{"instruction": "i", "output": ""}', "'output' is empty"),
        ('{"text": ""}', "'text' is empty"),
        ('{"prompt": "p", "chosen": "a"}', "missing field 'rejected'"),
        ('{"prompt": "p", "chosen": "same", "rejected": "same"}', "identical"),
        (
            '{"input": {"messages": [{"role": "user", "content": "x"}]}, '
            '"preferred_output": [{"role": "assistant", "content": "a"}]}',
            "missing field 'non_preferred_output'",
        ),
    ],
)
def test_each_problem_names_its_line(line: str, needle: str) -> None:
    found = problems(jsonl("", "  ", line))  # blank lines are skipped but still counted
    assert len(found) == 1 and found[0]["line"] == 3, found
    assert needle in found[0]["message"]


def test_mixed_formats_and_forced_format() -> None:
    found = problems(jsonl(CHAT, {"text": "raw"}))
    assert found[0]["line"] == 2 and "mixed formats" in found[0]["message"] and "line 1" in found[0]["message"]
    ok = parse_dataset(jsonl({"question": "q", "answer": "a"}), format="chat")
    assert ok.format == "chat"
    found = problems(jsonl({"text": "raw"}), format="preference")
    assert found[0]["line"] == 1 and "dataset format is preference" in found[0]["message"]
    found = problems('[{"text": "a"}, [1]]')  # a JSON array numbers its items from 1
    assert found == [{"line": 2, "message": "expected a JSON object, got an array"}]
    with pytest.raises(ValueError, match="unknown dataset format"):
        parse_dataset(jsonl(CHAT), format="yaml")


def test_too_long_for_context_uses_count_function() -> None:
    long = {"text": "word " * 50}
    found = problems(jsonl({"text": "short"}, long), max_tokens=20)
    assert found[0]["line"] == 2 and "longer than the model's context of 20" in found[0]["message"]
    exact = parse_dataset(jsonl(long), count_tokens=lambda s: len(s.split()))
    assert exact.report["tokens"]["max"] == 50 and exact.report["token_count"] == "tokenizer"


def test_empty_non_utf8_and_many_problems_summary(tmp_path: Path) -> None:
    assert problems("")[0] == {"line": 0, "message": problems("")[0]["message"]}
    assert "empty" in problems("\n  \n")[0]["message"]
    bad = jsonl(CHAT).encode() + b'{"text": "caf\xe9"}\n'
    found = problems(bad)
    assert found[0]["line"] == 2 and "not UTF-8" in found[0]["message"]
    many = jsonl(*["{bad"] * 30)
    with pytest.raises(DatasetError) as info:
        parse_dataset(many, source="big.jsonl", max_problems=5)
    err = info.value
    assert err.total == 30 and len(err.problems) == 5
    assert "big.jsonl has 30 problems" in str(err) and "line 5:" in str(err) and "and 25 more" in str(err)
    with pytest.raises(DatasetError, match="cannot read"):
        load_dataset(tmp_path / "missing.jsonl")


def test_prompt_only_for_rejection_sampling() -> None:
    ds = parse_dataset(
        jsonl({"messages": [{"role": "user", "content": "Name a colour."}]}, CHAT), allow_prompt_only=True
    )
    assert split_prompt_reference(ds.records[0]) == ([{"role": "user", "content": "Name a colour."}], None)
    prompt, ref = split_prompt_reference(ds.records[1])
    assert ref == "Paris." and [m["role"] for m in prompt] == ["system", "user"]


def test_token_estimate_is_reasonable() -> None:
    assert approx_tokens("") == 0
    assert approx_tokens("hello, world") == 3
    assert approx_tokens("internationalisation") == 4
    assert approx_tokens("안녕하세요") == 5
    assert 200 <= approx_tokens("The quick brown fox jumps. " * 40) <= 400


PAIR = {"query": "애 키우는데 돈 나오는 거 있어요?", "positive": "아동수당 지급 대상은 만 8세 미만 아동입니다."}


def test_pairs_for_the_embedding_method(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text(jsonl(PAIR, {**PAIR, "negative": "노령연금은 만 65세 이상에게 지급됩니다."}), encoding="utf-8")
    loaded = load_dataset(path, format="pairs")
    assert loaded.format == "pairs"
    assert loaded.records == [PAIR, {**PAIR, "negative": "노령연금은 만 65세 이상에게 지급됩니다."}]
    assert loaded.report["source_formats"] == {"query_positive": 2}
    assert loaded.report["negatives"] == 1 and loaded.report["examples"] == 2
    assert "assistant_tokens" not in loaded.report
    assert dict(format_report(loaded.report))["examples"] == "2"


def test_pairs_problems_name_their_lines() -> None:
    bad = jsonl(
        PAIR,
        {"query": "only a query"},
        {"positive": "only a passage"},
        {**PAIR, "negative": PAIR["positive"]},
        {**PAIR, "query": ""},
        {**PAIR, "score": 1},
        {**PAIR, "positive": 3},
    )
    found = {p["line"]: p["message"] for p in problems(bad)}
    assert sorted(found) == [2, 3, 4, 5, 6, 7]
    assert "missing field 'positive'" in found[2]
    assert "missing field 'query'" in found[3]
    assert "same text as 'positive'" in found[4]
    assert "'query' is empty" in found[5]
    assert "unknown fields ['score']" in found[6]
    assert "'positive' must be a string" in found[7]


def test_pairs_do_not_mix_with_chat_and_a_forced_format_says_what_it_needs() -> None:
    assert "mixed formats" in problems(jsonl(PAIR, CHAT))[0]["message"]
    message = problems(jsonl(CHAT), format="pairs")[0]["message"]
    assert "dataset format is pairs" in message and "query, positive" in message
