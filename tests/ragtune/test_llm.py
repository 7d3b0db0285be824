"""Chat-model factory: the embedded model by default, an OpenAI-compatible endpoint when configured."""

from __future__ import annotations

import pytest
from langchain_openai import ChatOpenAI

from ragtune.config import LLMSettings
from ragtune.llm import LLMConfigError, LocalChatModel, make_chat_model, model_label, supports_tools


def test_nothing_configured_gives_the_embedded_model_which_may_not_pick_tools():
    model = make_chat_model(LLMSettings(chat_max_tokens=32, llm_threads=1))
    assert isinstance(model, LocalChatModel)
    assert model.max_new_tokens == 32 and model.threads == 1
    assert not supports_tools(model) and model_label(model) == "smollm2-135m"
    assert model._model is None  # nothing loaded (no torch import) until first use


def test_an_endpoint_gives_an_openai_compatible_model(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    model = make_chat_model(LLMSettings(chat_model="gpt-test", chat_api_key="k"))
    assert isinstance(model, ChatOpenAI)
    assert supports_tools(model) and model_label(model) == "gpt-test"
    assert str(model.openai_api_base) == "http://127.0.0.1:9/v1"


def test_a_named_model_without_an_endpoint_is_a_clear_error():
    with pytest.raises(LLMConfigError, match="RAGTUNE_CHAT_BASE_URL"):
        make_chat_model(LLMSettings(chat_model="gpt-test"))
