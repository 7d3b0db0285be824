"""The embedded engine: transformers + PEFT in this process (CPU, or a GPU when present).

Each base model is loaded once; LoRA adapters are hot-swapped onto it per request (`load_adapter` /
`set_adapter`, `disable_adapter` for the base itself), and at most RAGTUNE_SERVING_MAX_LOADED tuned models
stay loaded (least recently used go first). Full fine-tunes load as their own weights. Every model access runs
on one generation thread, so the event loop never blocks and adapters never switch under a running request.
torch, transformers and peft are imported on that thread, on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragtune.config import FinetuneSettings
from ragtune.models import SMOLLM2, UnknownModel, resolve_base_model

from .engine import ChatParams, Completion, Delta, ServedModel, ServingError

log = logging.getLogger(__name__)
_TOOL_TAG = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


@dataclass
class _Base:
    """A loaded base model: its tokenizer and module (a PeftModel once an adapter was loaded onto it)."""

    tokenizer: Any
    model: Any
    adapters: set[str] = field(default_factory=set)


@dataclass
class _Tuned:
    """A loaded tuned model: the adapter name on its base, or its own full weights."""

    base: str
    adapter: str | None = None
    model: Any = None
    tokenizer: Any = None


class TransformersEngine:
    """Serve base models, LoRA adapters (hot-swapped, LRU-bounded) and full fine-tunes with transformers."""

    name = "transformers"

    def __init__(self, settings: FinetuneSettings) -> None:
        self.models_dir = settings.models_path()
        self.max_loaded = settings.serving_max_loaded
        self.threads = settings.serving_threads
        self.default_base = settings.default_base_model
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ragtune-generate", initializer=self._init_thread)
        self._bases: dict[str, _Base] = {}
        self._tuned: OrderedDict[str, _Tuned] = OrderedDict()
        self.load_seconds: dict[str, float] = {}  # how long each model's last load took (bench/serving.py)

    # ---------------------------------------------------------------------------------------- interface
    async def base_models(self) -> list[str]:
        """Return the embedded model and the default base model (when it resolves here)."""
        names = []
        for name in (self.default_base, SMOLLM2):
            try:
                names.append(resolve_base_model(name, allow_hub=False).name)
            except UnknownModel:
                continue
        return list(dict.fromkeys(names))

    async def supports(self, model: ServedModel) -> str | None:
        """Serve anything with weights on disk whose base resolves."""
        if model.kind == "base":
            return None
        try:
            resolve_base_model(model.base)
        except UnknownModel as e:
            return f"{model.id} was tuned from {model.base}, which cannot be loaded here: {e}"
        return None

    async def complete(self, model: ServedModel, params: ChatParams) -> Completion:
        """Generate a whole answer on the generation thread."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._generate, model, params, None, None)

    async def stream(self, model: ServedModel, params: ChatParams) -> AsyncIterator[Delta]:
        """Stream text as it is generated; the first Delta (empty) means the prompt was accepted."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta | None] = asyncio.Queue()
        cancel = threading.Event()

        def emit(text: str) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, Delta(text=text))

        future = loop.run_in_executor(self._pool, self._generate, model, params, emit, cancel)
        future.add_done_callback(lambda _: queue.put_nowait(None))
        try:
            while (item := await queue.get()) is not None:
                yield item
            done = future.result()
            yield Delta(
                finish_reason=done.finish_reason,
                prompt_tokens=done.prompt_tokens,
                completion_tokens=done.completion_tokens,
                tool_calls=done.tool_calls,
                text=done.text if done.tool_calls is None and params.tools else "",
            )
        finally:
            cancel.set()  # the client went away or the stream ended: stop generating

    def loaded(self) -> list[str]:
        """Return the tuned models kept loaded, least recently used first."""
        return list(self._tuned)

    async def unload(self, model_id: str) -> None:
        """Drop a tuned model from memory on the generation thread."""
        await asyncio.get_running_loop().run_in_executor(self._pool, self._evict, model_id)

    async def close(self) -> None:
        """Stop the generation thread and drop every model."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._bases.clear()
        self._tuned.clear()

    # ---------------------------------------------------------------------------------------- loading
    def _init_thread(self) -> None:
        import torch

        torch.set_num_threads(self.threads)

    def _device(self) -> tuple[str, Any]:
        import torch

        if torch.cuda.is_available():
            return "cuda", torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return "cpu", torch.float32

    def _load_weights(self, path: str) -> tuple[Any, Any]:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        device, dtype = self._device()
        tok = AutoTokenizer.from_pretrained(path)
        model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        model = model.to(device).eval()
        if getattr(model, "hf_quantizer", None) is not None:  # a GGUF-born folder: see notes/localllm.md
            model.hf_quantizer, model.is_quantized = None, False
        return tok, model

    def _base(self, name: str) -> _Base:
        if name in self._bases:
            return self._bases[name]
        from ragtune.servers.worker.recipes.common import convert_embedded

        ref = resolve_base_model(name)
        path = str(convert_embedded(Path(ref.path), self.models_dir)) if ref.kind == "embedded" else ref.path
        started = time.perf_counter()
        tok, model = self._load_weights(path)
        self.load_seconds[ref.name] = time.perf_counter() - started
        self._bases[name] = _Base(tok, model)
        return self._bases[name]

    def _select(self, model: ServedModel) -> tuple[Any, Any, contextlib.AbstractContextManager[Any]]:
        """Return (tokenizer, module, context) ready to generate as `model`."""
        if model.kind == "base":
            base = self._base(model.id)
            ctx = base.model.disable_adapter() if base.adapters else contextlib.nullcontext()
            return base.tokenizer, base.model, ctx
        tuned = self._tuned.get(model.id) or self._load_tuned(model)
        self._tuned.move_to_end(model.id)
        if tuned.adapter is None:
            return tuned.tokenizer, tuned.model, contextlib.nullcontext()
        base = self._bases[tuned.base]
        base.model.set_adapter(tuned.adapter)
        return base.tokenizer, base.model, contextlib.nullcontext()

    def _load_tuned(self, model: ServedModel) -> _Tuned:
        started = time.perf_counter()
        if model.kind == "full":
            tok, weights = self._load_weights(str(model.path))
            tuned = _Tuned(model.base, model=weights, tokenizer=tok)
        else:
            from peft import PeftModel

            base = self._base(model.base)
            adapter = "a" + hashlib.sha1(model.id.encode()).hexdigest()[:12]  # module keys cannot hold ':' or '.'
            if base.adapters:  # already a PeftModel: add this adapter next to the others
                base.model.load_adapter(str(model.path), adapter_name=adapter)
            else:
                base.model = PeftModel.from_pretrained(base.model, str(model.path), adapter_name=adapter)
                base.model.eval()
            base.adapters.add(adapter)
            tuned = _Tuned(model.base, adapter=adapter)
        self._tuned[model.id] = tuned
        self.load_seconds[model.id] = time.perf_counter() - started
        while len(self._tuned) > self.max_loaded:
            self._evict(next(iter(self._tuned)), keep=model.id)
        return tuned

    def _evict(self, model_id: str, keep: str | None = None) -> None:
        tuned = self._tuned.pop(model_id, None)
        if tuned is None or tuned.adapter is None:
            return
        base = self._bases[tuned.base]
        others = base.adapters - {tuned.adapter}
        if not others:  # the last adapter: back to the plain base model (PEFT cannot drop its last adapter)
            base.model = base.model.unload()
        else:
            wanted = self._tuned[keep].adapter if keep is not None and keep in self._tuned else None
            base.model.set_adapter(wanted or next(iter(others)))  # never delete the active adapter
            base.model.delete_adapter(tuned.adapter)
        base.adapters.discard(tuned.adapter)
        log.info("unloaded adapter of %s (%d tuned models loaded)", model_id, len(self._tuned))

    # ---------------------------------------------------------------------------------------- generation
    def _generate(
        self,
        model: ServedModel,
        params: ChatParams,
        emit: Callable[[str], None] | None,
        cancel: threading.Event | None,
    ) -> Completion:
        import torch

        tok, lm, ctx = self._select(model)
        prompt = _render(tok, params, model.id)
        n_prompt = int(prompt["input_ids"].shape[1])
        limit = getattr(lm.config, "max_position_embeddings", None)
        if limit and n_prompt + params.max_tokens > limit:
            raise ServingError(
                400,
                f"{n_prompt} prompt tokens + max_tokens {params.max_tokens} exceed {model.id}'s context of {limit}",
                param="messages",
                code="context_length_exceeded",
            )
        collector = _Collector(tok, params.stop, None if params.tools else emit)
        if emit:
            emit("")  # the prompt is accepted: the route may now answer 200 and stream
        sampling = params.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sampling}
        if sampling:
            kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
            torch.manual_seed(params.seed if params.seed is not None else int.from_bytes(uuid.uuid4().bytes[:4]))
        with ctx, torch.inference_mode():
            out = lm.generate(
                **prompt.to(lm.device),
                max_new_tokens=params.max_tokens,
                pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
                streamer=collector,
                stopping_criteria=_stopping(collector, cancel),
                **kwargs,
            )
        generated = out[0, n_prompt:].tolist()
        text = collector.text
        finish = "stop"
        if not collector.stopped and len(generated) >= params.max_tokens and generated[-1] != tok.eos_token_id:
            finish = "length"
        calls = _tool_calls(text) if params.tools else None
        return Completion(
            text=text,
            finish_reason="tool_calls" if calls else finish,
            prompt_tokens=n_prompt,
            completion_tokens=len(generated),
            tool_calls=calls,
        )


def _render(tok: Any, params: ChatParams, model_id: str) -> Any:
    """Apply the model's own chat template (with tools when it supports them)."""
    template = tok.chat_template or ""
    if params.tools and "tools" not in template:
        raise ServingError(
            400,
            f"{model_id}'s chat template has no tool support, so tools cannot be used with it; "
            "drop tools (or set tool_choice to 'none'), or use a model whose template renders tools",
            param="tools",
            code="tools_not_supported",
        )
    try:
        return tok.apply_chat_template(
            params.messages,
            tools=params.tools,
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        )
    except Exception as e:  # jinja raises its own errors (role order, missing fields): tell the caller which
        raise ServingError(400, f"{model_id}'s chat template rejected the messages: {e}", param="messages") from e


class _Collector:
    """A transformers streamer that decodes new tokens, honours stop strings and emits only settled text."""

    def __init__(self, tok: Any, stops: list[str], emit: Callable[[str], None] | None) -> None:
        self.tok, self.stops, self.emit = tok, stops, emit
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.ids: list[int] = []
        self.prompt_seen = False
        self.stopped = False
        self.text = ""
        self.sent = 0

    def put(self, value: Any) -> None:
        """Receive the prompt (ignored), then each new token."""
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        self.ids.extend(int(i) for i in value.reshape(-1).tolist())
        self._advance(final=False)

    def end(self) -> None:
        """Flush what is left."""
        self._advance(final=True)

    def _advance(self, *, final: bool) -> None:
        if self.stopped:
            return
        text = self.tok.decode(self.ids, skip_special_tokens=True)
        cuts = [i for i in (text.find(s) for s in self.stops) if i >= 0]
        if cuts:
            text, self.stopped, final = text[: min(cuts)], True, True
        self.text = text
        settled = len(text) if final else len(text) - self.hold - (1 if text.endswith("\ufffd") else 0)
        if self.emit and settled > self.sent:
            self.emit(text[self.sent : settled])
            self.sent = settled


def _stopping(collector: _Collector, cancel: threading.Event | None) -> Any:
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class Stop(StoppingCriteria):
        """Stop at a stop string or when the client is gone."""

        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = collector.stopped or (cancel is not None and cancel.is_set())
            return torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([Stop()])


def _tool_calls(text: str) -> list[dict[str, Any]] | None:
    """Parse tool calls the model wrote (`<tool_call>{...}</tool_call>` or a bare JSON call) into OpenAI's shape."""
    raw = _TOOL_TAG.findall(text) or ([text.strip()] if text.strip().startswith("{") else [])
    calls = []
    for item in raw:
        try:
            data = json.loads(item)
        except json.JSONDecodeError:
            continue
        if not isinstance(data, dict) or "name" not in data:
            continue
        args = data.get("arguments", data.get("parameters", {}))
        calls.append(
            {
                "id": f"call_{uuid.uuid4().hex[:24]}",
                "type": "function",
                "function": {
                    "name": str(data["name"]),
                    "arguments": args if isinstance(args, str) else json.dumps(args),
                },
            }
        )
    return calls or None
