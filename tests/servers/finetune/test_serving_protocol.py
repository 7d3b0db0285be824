"""The chat wire format without a model: request checks OpenAI's schema cannot express, and tool-call parsing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from ragtune.servers.finetune.serving.embedded import _tool_calls
from ragtune.servers.finetune.serving.engine import ServingError
from ragtune.servers.finetune.serving.protocol import ChatRequest, to_params

TOOL = {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}


def _req(**kw: Any) -> ChatRequest:
    return ChatRequest(**{"model": "m", "messages": [{"role": "user", "content": "hi"}], **kw})


def test_requests_become_engine_parameters() -> None:
    params = to_params(
        _req(
            messages=[
                {"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}]},
                {"role": "user", "content": "hi"},
            ],
            max_completion_tokens=7,
            max_tokens=99,
            stop="END",
            temperature=0,
        ),
        limit=64,
    )
    assert params.messages[0] == {"role": "system", "content": "Be brief."}
    assert (params.max_tokens, params.stop, params.temperature, params.top_p) == (7, ["END"], 0, 1.0)
    assert to_params(_req(), limit=64).max_tokens == 64  # no limit asked: the server's
    assert to_params(_req(tools=[TOOL], tool_choice="none"), limit=8).tools is None  # "none" drops tools


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"n": 3}, "n"),
        ({"max_tokens": 65}, "max_tokens"),
        ({"max_completion_tokens": 65}, "max_completion_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"logprobs": True}, "logprobs"),
        ({"tools": [{"type": "function"}]}, "tools"),
        ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "other"}}}, "tool_choice"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, "messages"),
        ({"messages": [{"role": "assistant"}]}, "messages"),
    ],
)
def test_requests_the_engines_cannot_honour_are_refused_with_the_parameter(change: dict[str, Any], param: str) -> None:
    with pytest.raises(ServingError) as err:
        to_params(_req(**change), limit=64)
    assert err.value.status == 400 and err.value.param == param and len(err.value.message) > 15


def test_tool_calls_are_parsed_from_tagged_or_bare_json() -> None:
    tagged = _tool_calls('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Seoul"}}\n</tool_call>')
    bare = _tool_calls('{"name": "get_weather", "parameters": {"city": "Busan"}}')
    assert tagged and tagged[0]["type"] == "function" and tagged[0]["id"].startswith("call_")
    assert tagged[0]["function"] == {"name": "get_weather", "arguments": json.dumps({"city": "Seoul"})}
    assert bare and json.loads(bare[0]["function"]["arguments"]) == {"city": "Busan"}
    assert _tool_calls("It is sunny.") is None and _tool_calls("{not json") is None
