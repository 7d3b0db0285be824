"""The vLLM engine: forward chat to a vLLM OpenAI server and load tuned adapters into it at run time.

Start vLLM with LoRA on and runtime updates allowed, e.g.
`VLLM_ALLOW_RUNTIME_LORA_UPDATING=True vllm serve HuggingFaceTB/SmolLM2-135M-Instruct --enable-lora
--max-lora-rank 64 --max-loras 4`, then set RAGTUNE_SERVING_ENGINE=vllm and RAGTUNE_SERVING_VLLM_URL=http://host:8000/v1.
A tuned model's adapter is loaded with `POST /v1/load_lora_adapter {lora_name, lora_path}` on first use (the
path must be readable by the vLLM server) and called by its name; at most RAGTUNE_SERVING_MAX_LOADED stay
loaded (`POST /v1/unload_lora_adapter`, least recently used first).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

import httpx

from ragtune.config import FinetuneSettings

from .engine import ChatParams, Completion, Delta, ServedModel, ServingError

FORWARDED = ("temperature", "top_p", "stop", "seed", "tools", "tool_choice")


class VLLMEngine:
    """Serve base models and LoRA adapters through a running vLLM OpenAI-compatible server."""

    name = "vllm"

    def __init__(self, settings: FinetuneSettings, *, client: httpx.AsyncClient | None = None) -> None:
        if not settings.serving_vllm_url:
            raise ServingError(
                500, "RAGTUNE_SERVING_ENGINE=vllm needs RAGTUNE_SERVING_VLLM_URL (e.g. http://127.0.0.1:8000/v1)"
            )
        self.url = settings.serving_vllm_url.rstrip("/")
        self.max_loaded = settings.serving_max_loaded
        self.client = client or httpx.AsyncClient(timeout=httpx.Timeout(30, read=600))
        self._loaded: OrderedDict[str, str] = OrderedDict()  # model id -> adapter path

    async def base_models(self) -> list[str]:
        """Return the models the vLLM server serves that are not adapters."""
        body = (await self._call("GET", "/models")).json()
        return [m["id"] for m in body.get("data", []) if not m.get("parent")]

    async def supports(self, model: ServedModel) -> str | None:
        """Adapters of a base vLLM serves, or base models; full fine-tunes need their own vLLM process."""
        if model.kind == "full":
            return f"{model.id} is a full fine-tune: serve it with its own vLLM process (vllm serve {model.path})"
        if model.kind == "lora" and model.base not in await self.base_models():
            return f"{model.id} was tuned from {model.base}, but the vLLM server at {self.url} serves another model"
        return None

    async def complete(self, model: ServedModel, params: ChatParams) -> Completion:
        """Forward one chat completion."""
        await self._ensure(model)
        body = (await self._call("POST", "/chat/completions", json=self._body(model, params, stream=False))).json()
        choice, used = body["choices"][0], body.get("usage") or {}
        message = choice.get("message") or {}
        return Completion(
            text=message.get("content") or "",
            finish_reason=choice.get("finish_reason") or "stop",
            prompt_tokens=int(used.get("prompt_tokens", 0)),
            completion_tokens=int(used.get("completion_tokens", 0)),
            tool_calls=message.get("tool_calls") or None,
        )

    async def stream(self, model: ServedModel, params: ChatParams) -> AsyncIterator[Delta]:
        """Forward a streamed chat completion, re-yielding its pieces."""
        await self._ensure(model)
        body = self._body(model, params, stream=True)
        async with self.client.stream("POST", f"{self.url}/chat/completions", json=body) as response:
            if response.status_code >= 400:
                await response.aread()
                raise _refusal(response)
            yield Delta()
            finish, calls = "stop", None
            used: dict[str, Any] = {}
            async for line in response.aiter_lines():
                if not line.startswith("data:") or line[5:].strip() == "[DONE]":
                    continue
                chunk = json.loads(line[5:])
                used = chunk.get("usage") or used
                for choice in chunk.get("choices") or []:
                    delta = choice.get("delta") or {}
                    calls = delta.get("tool_calls") or calls
                    finish = choice.get("finish_reason") or finish
                    if delta.get("content"):
                        yield Delta(text=delta["content"])
            yield Delta(
                finish_reason=finish,
                prompt_tokens=int(used.get("prompt_tokens", 0)),
                completion_tokens=int(used.get("completion_tokens", 0)),
                tool_calls=calls,
            )

    def loaded(self) -> list[str]:
        """Return the adapters this engine loaded into vLLM, least recently used first."""
        return list(self._loaded)

    async def unload(self, model_id: str) -> None:
        """Unload an adapter from vLLM (no-op when this engine did not load it)."""
        if self._loaded.pop(model_id, None) is not None:
            await self._call("POST", "/unload_lora_adapter", json={"lora_name": model_id})

    async def close(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()

    # ---------------------------------------------------------------------------------------- helpers
    def _body(self, model: ServedModel, params: ChatParams, *, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": model.id,
            "messages": params.messages,
            "max_tokens": params.max_tokens,
            **{k: params.raw[k] for k in FORWARDED if k in params.raw},
        }
        if stream:
            body |= {"stream": True, "stream_options": {"include_usage": True}}
        return body

    async def _ensure(self, model: ServedModel) -> None:
        if model.kind != "lora":
            return
        if model.id in self._loaded:
            self._loaded.move_to_end(model.id)
            return
        response = await self.client.post(
            f"{self.url}/load_lora_adapter", json={"lora_name": model.id, "lora_path": model.path}
        )
        if response.status_code >= 400 and "already" not in response.text:
            raise ServingError(
                502,
                f"vLLM at {self.url} would not load the adapter of {model.id} ({response.status_code}: "
                f"{response.text[:300]}); start it with --enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, "
                "and make the adapter folder readable there",
                code="engine_error",
                type="server_error",
            )
        self._loaded[model.id] = str(model.path)
        while len(self._loaded) > self.max_loaded:
            await self.unload(next(iter(self._loaded)))

    async def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.client.request(method, f"{self.url}{path}", **kwargs)
        except httpx.HTTPError as e:
            raise ServingError(
                503,
                f"vLLM at {self.url} is unreachable ({e}); start it or fix RAGTUNE_SERVING_VLLM_URL",
                code="engine_unavailable",
                type="server_error",
            ) from e
        if response.status_code >= 400:
            raise _refusal(response)
        return response


def _refusal(response: httpx.Response) -> ServingError:
    """Pass vLLM's own 4xx on (bad parameters); report anything else as the engine's failure."""
    try:
        body = response.json()
    except ValueError:
        body = {}
    err = (
        body.get("error", body) if isinstance(body, dict) else {}
    )  # {"error": {...}} or older {"object": "error", ...}
    err = err if isinstance(err, dict) else {"message": str(err)}
    status = response.status_code if response.status_code < 500 else 502
    code = err.get("code")
    return ServingError(
        status,
        f"vLLM: {err.get('message') or response.text[:300]}",
        param=err.get("param"),
        code=code if isinstance(code, str) else None,
    )
