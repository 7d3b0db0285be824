"""The vLLM engine's request shaping, against a small local HTTP stand-in for a vLLM OpenAI server.

vLLM itself needs a GPU and is not installable here: the stand-in answers the endpoints ragtune calls
(/v1/models, /v1/load_lora_adapter, /v1/unload_lora_adapter, /v1/chat/completions) the way vLLM documents
them and records every request, so these tests check what ragtune sends and how it maps the answers."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from openai import OpenAI

from ragtune.config import FinetuneSettings
from ragtune.jobs import Job, JobStatus, JobStore, new_id

BASE = "smollm2-135m-instruct"


class StandIn:
    """A vLLM-shaped OpenAI server that records requests and answers 'Velvet Lantern'."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.loras: dict[str, str] = {}
        self.app = FastAPI()
        self.app.get("/v1/models")(self.models)
        self.app.post("/v1/load_lora_adapter")(self.load)
        self.app.post("/v1/unload_lora_adapter")(self.unload)
        self.app.post("/v1/chat/completions")(self.chat)

    async def models(self) -> dict[str, Any]:
        base = [{"id": BASE, "object": "model", "parent": None}]
        return {"object": "list", "data": base + [{"id": n, "object": "model", "parent": BASE} for n in self.loras]}

    async def load(self, request: Request) -> Any:
        body = await request.json()
        self.calls.append(("load", body))
        if body["lora_name"] in self.loras:
            return JSONResponse({"error": {"message": "already been loaded", "code": 400}}, 400)
        self.loras[body["lora_name"]] = body["lora_path"]
        return f"Success: LoRA adapter '{body['lora_name']}' added successfully."

    async def unload(self, request: Request) -> str:
        body = await request.json()
        self.calls.append(("unload", body))
        self.loras.pop(body["lora_name"])
        return "Success"

    async def chat(self, request: Request) -> Any:
        body = await request.json()
        self.calls.append(("chat", body))
        if body["model"] != BASE and body["model"] not in self.loras:
            err = {"message": f"The model `{body['model']}` does not exist.", "type": "NotFoundError", "code": 404}
            return JSONResponse({"error": err}, 404)
        usage = {"prompt_tokens": 11, "completion_tokens": 2, "total_tokens": 13}
        if not body.get("stream"):
            message = {"role": "assistant", "content": "Velvet Lantern"}
            choice = {"index": 0, "message": message, "finish_reason": "stop"}
            return {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": body["model"],
                "choices": [choice],
                "usage": usage,
            }

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            return "data: " + json.dumps({"id": "x", "object": "chat.completion.chunk", "choices": [choice]}) + "\n\n"

        lines = [
            chunk({"role": "assistant"}),
            chunk({"content": "Velvet"}),
            chunk({"content": " Lantern"}),
            chunk({}, "stop"),
            "data: " + json.dumps({"id": "x", "choices": [], "usage": usage}) + "\n\n",
            "data: [DONE]\n\n",
        ]
        return StreamingResponse(iter(lines), media_type="text/event-stream")


def _serve(app: Any) -> tuple[str, Callable[[], None]]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:  # uvicorn exposes a flag, not an awaitable, for a thread-hosted server
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)

    def stop() -> None:
        server.should_exit = True
        thread.join(10)

    return f"http://127.0.0.1:{port}", stop


def _tuned(store: JobStore, tmp_path: Path, name: str, *, lora: bool = True) -> str:
    job_id = new_id("ftjob")
    weights = tmp_path / job_id / ("adapter" if lora else "model")
    weights.mkdir(parents=True)
    (weights / ("adapter_config.json" if lora else "config.json")).write_text("{}")
    model = f"ft:{BASE}:org-ragtune:{name}:{job_id}"
    store.create_job(
        Job(
            id=job_id,
            created_at=int(time.time()),
            model=BASE,
            status=JobStatus.succeeded,
            training_file="file-x",
            fine_tuned_model=model,
            result_files=[str(weights)],
            output_dir=str(weights.parent),
        )
    )
    return model


@pytest.fixture
def vllm(tmp_path: Path, isolated_env: Path) -> Iterator[tuple[StandIn, OpenAI, JobStore, Path]]:
    """The stand-in, ragtune's service in vLLM mode (2 adapters kept), an SDK client, and the job store."""
    from ragtune.servers.finetune.app import build_app

    stand_in = StandIn()
    vllm_url, stop_vllm = _serve(stand_in.app)
    settings = FinetuneSettings(
        home=isolated_env, serving_engine="vllm", serving_vllm_url=f"{vllm_url}/v1", serving_max_loaded=1
    )
    store = JobStore(settings.db_path())
    url, stop = _serve(build_app(settings, host="127.0.0.1", port=8702))
    yield stand_in, OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0), store, tmp_path
    stop()
    stop_vllm()
    store.close()


def test_models_come_from_vllm_and_the_job_store(vllm: tuple[StandIn, OpenAI, JobStore, Path]) -> None:
    stand_in, client, store, tmp_path = vllm
    model = _tuned(store, tmp_path, "a")
    assert [m.id for m in client.models.list()] == [BASE, model]


def test_a_tuned_model_is_loaded_into_vllm_once_and_called_by_name(
    vllm: tuple[StandIn, OpenAI, JobStore, Path],
) -> None:
    stand_in, client, store, tmp_path = vllm
    model = _tuned(store, tmp_path, "a")
    messages = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "Codename?"}]
    for _ in range(2):
        answer = client.chat.completions.create(
            model=model,
            messages=messages,
            max_completion_tokens=5,
            temperature=0,
            stop="\n",
            seed=3,  # type: ignore[arg-type]
        )
    assert answer.choices[0].message.content == "Velvet Lantern" and answer.model == model
    assert answer.usage and answer.usage.total_tokens == 13
    loads = [body for kind, body in stand_in.calls if kind == "load"]
    assert loads == [{"lora_name": model, "lora_path": str(tmp_path / model.rsplit(":", 1)[-1] / "adapter")}]
    chat = [body for kind, body in stand_in.calls if kind == "chat"][-1]
    assert chat == {
        "model": model,
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Codename?"}],
        "max_tokens": 5,
        "temperature": 0.0,
        "stop": "\n",
        "seed": 3,
    }


def test_streaming_is_forwarded_and_parsed_by_the_sdk(vllm: tuple[StandIn, OpenAI, JobStore, Path]) -> None:
    stand_in, client, store, tmp_path = vllm
    model = _tuned(store, tmp_path, "a")
    stream = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Codename?"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Velvet Lantern"
    assert chunks[-1].usage and chunks[-1].usage.completion_tokens == 2
    chat = [body for kind, body in stand_in.calls if kind == "chat"][-1]
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


def test_least_recently_used_adapters_are_unloaded_from_vllm(vllm: tuple[StandIn, OpenAI, JobStore, Path]) -> None:
    stand_in, client, store, tmp_path = vllm
    first, second = _tuned(store, tmp_path, "a"), _tuned(store, tmp_path, "b")
    for model in (first, second):
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=2)
    assert ("unload", {"lora_name": first}) in stand_in.calls
    assert list(stand_in.loras) == [second]


def test_full_fine_tunes_and_vllm_errors_are_clear(vllm: tuple[StandIn, OpenAI, JobStore, Path]) -> None:
    stand_in, client, store, tmp_path = vllm
    full = _tuned(store, tmp_path, "full", lora=False)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=full, messages=[{"role": "user", "content": "hi"}])
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "model_not_supported"
    assert "vllm serve" in err.value.body["message"]
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="ft:gone:x:y:ftjob-1", messages=[{"role": "user", "content": "hi"}])
    assert isinstance(missing.value.body, dict) and missing.value.body["code"] == "model_not_found"


def test_model_and_chat_routes_need_the_bearer_token(tmp_path: Path, isolated_env: Path) -> None:
    from pydantic import SecretStr
    from ragtune.servers.finetune.app import build_app

    stand_in = StandIn()
    vllm_url, stop_vllm = _serve(stand_in.app)
    token = "s3cret-Token-for-tests-0123"
    settings = FinetuneSettings(
        home=isolated_env, api_token=SecretStr(token), serving_engine="vllm", serving_vllm_url=f"{vllm_url}/v1"
    )
    url, stop = _serve(build_app(settings, host="127.0.0.1", port=8702))
    try:
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).models.list()
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=f"{url}/v1", api_key="wrong", max_retries=0).chat.completions.create(
                model=BASE, messages=[{"role": "user", "content": "hi"}]
            )
        assert [m.id for m in OpenAI(base_url=f"{url}/v1", api_key=token, max_retries=0).models.list()] == [BASE]
        assert not [kind for kind, _ in stand_in.calls if kind == "chat"]  # refused before reaching the engine
    finally:
        stop()
        stop_vllm()
