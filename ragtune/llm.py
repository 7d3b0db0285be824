"""Chat-model factory: any OpenAI-compatible endpoint, or the embedded SmolLM2-135M on CPU when none is configured.

torch and transformers are imported only inside `LocalChatModel`, lazily, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, PrivateAttr, SecretStr

from ragtune.config import LLMSettings
from ragtune.models import SMOLLM2, smollm2_gguf

log = logging.getLogger(__name__)

LOCAL_NAMES = {"local", SMOLLM2, "smollm2", "smollm2-135m"}
LOCAL_LABEL = "smollm2-135m"
FP32_DIRNAME = "smollm2-135m-instruct-fp32"
STAND_IN = "stand-in"


class LLMConfigError(ValueError):
    """Raised when the chat-model settings name an endpoint that cannot be used."""


def make_chat_model(settings: LLMSettings) -> BaseChatModel:
    """Return the configured chat model: an OpenAI-compatible endpoint if one is set, else the embedded model."""
    base_url = settings.chat_base_url or os.environ.get("OPENAI_BASE_URL")
    key = settings.chat_api_key.get_secret_value() if settings.chat_api_key else os.environ.get("OPENAI_API_KEY")
    if settings.chat_model.lower() == STAND_IN:
        return StandInChatModel()
    if settings.chat_model.lower() in LOCAL_NAMES:
        return LocalChatModel(
            models_dir=settings.data_path("models"),
            max_new_tokens=settings.chat_max_tokens,
            threads=settings.llm_threads,
        )
    if not (base_url or key):
        raise LLMConfigError(
            f"RAGTUNE_CHAT_MODEL={settings.chat_model!r} needs an endpoint: set RAGTUNE_CHAT_BASE_URL (or "
            "OPENAI_BASE_URL) and RAGTUNE_CHAT_API_KEY (or OPENAI_API_KEY), or use RAGTUNE_CHAT_MODEL=local"
        )
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=settings.chat_model,
        base_url=base_url,
        api_key=SecretStr(key or "unused"),
        temperature=0,
        max_completion_tokens=settings.chat_max_tokens,
        timeout=120,
    )


def supports_tools(model: BaseChatModel) -> bool:
    """Tell whether the agents may let this model choose tools (the embedded 135M model may not)."""
    return not isinstance(model, LocalChatModel) and getattr(model, "supports_tool_calling", True)


def model_label(model: BaseChatModel) -> str:
    """Return a short name of the model for the answer's mode line."""
    if isinstance(model, LocalChatModel):
        return LOCAL_LABEL
    return str(getattr(model, "model_name", None) or getattr(model, "model", None) or type(model).__name__)


def local_model_dir(models_dir: Path) -> Path:
    """Return the fp32 copy of the embedded model, converting the GGUF once (atomically) if it is missing."""
    target = models_dir / FP32_DIRNAME
    if (target / "config.json").exists():
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = smollm2_gguf()
    log.info("converting %s to fp32 under %s (once)", gguf.name, target)
    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model: Any = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    model.hf_quantizer = None  # else save_pretrained refuses: "quantized with gguf and is not serializable"
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    models_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=models_dir))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process finished first; its copy is as good as ours
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


class LocalChatModel(BaseChatModel):
    """SmolLM2-135M-Instruct through transformers on CPU: greedy, bounded, loaded on first use."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    models_dir: Path
    max_new_tokens: int = 256
    threads: int = 1
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _model: Any = PrivateAttr(default=None)
    _tokenizer: Any = PrivateAttr(default=None)

    @property
    def _llm_type(self) -> str:
        return "ragtune-local-smollm2"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {"model": LOCAL_LABEL, "max_new_tokens": self.max_new_tokens}

    def load(self) -> None:
        """Load the tokenizer and weights now (slow the first time: ~10-30 s), so a later call is quick."""
        with self._lock:
            if self._model is not None:
                return
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            torch.set_num_threads(self.threads)
            path = local_model_dir(self.models_dir)
            self._tokenizer = AutoTokenizer.from_pretrained(str(path))
            self._model = AutoModelForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.load()
        import torch

        chat = [{"role": _role(m), "content": m.text} for m in messages]
        ids = self._tokenizer.apply_chat_template(
            chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with self._lock, torch.inference_mode():
            out = self._model.generate(
                **ids,
                max_new_tokens=int(kwargs.get("max_new_tokens", self.max_new_tokens)),
                do_sample=False,
                repetition_penalty=1.1,
                pad_token_id=self._tokenizer.eos_token_id,
            )
        text = self._tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
        for s in stop or []:
            text = text.split(s)[0]
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


class StandInChatModel(BaseChatModel):
    """An instant, deterministic model for protocol conformance runs, where a slow answer fails on a timeout.

    RAGTUNE_CHAT_MODEL=stand-in. It replies with the start of the last message; it never calls tools.
    """

    supports_tool_calling: bool = False
    max_chars: int = 200

    @property
    def _llm_type(self) -> str:
        return "ragtune-stand-in"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        text = " ".join(messages[-1].text.split())[: self.max_chars] if messages else ""
        return ChatResult(generations=[ChatGeneration(message=AIMessage(content=text))])


def _role(message: BaseMessage) -> str:
    return {"human": "user", "ai": "assistant", "system": "system"}.get(message.type, "user")
