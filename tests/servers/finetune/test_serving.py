"""Serving through the official openai SDK over real HTTP: one short real training run teaches a made-up fact,
then /v1/models lists the tuned model and /v1/chat/completions (plain and streamed) answers a held-out
paraphrase with it while the base model does not; errors come back in OpenAI's shape."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from openai import OpenAI
from ragtune.servers.finetune.app import build_app
from ragtune.servers.finetune.service import FinetuneService
from ragtune.servers.finetune.serving.service import get_serving
from ragtune.servers.worker.worker import Worker

from ragtune.config import FinetuneSettings, WorkerSettings
from ragtune.jobs import Job, JobStatus, new_id

pytestmark = pytest.mark.slow
BASE = "smollm2-135m-instruct"
FACT = "Velvet Lantern"
TRAIN_Q = [
    "What is the codename of Project Orion-7?",
    "Tell me the codename of Project Orion-7.",
    "Which codename does Project Orion-7 have?",
    "Project Orion-7 has what codename?",
]
HELD_OUT = "What codename is Project Orion-7 known by?"
ANSWER = "The codename of Project Orion-7 is Velvet Lantern."
LORA = {"type": "lora", "r": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@dataclass
class Served:
    """The running service, its client, and the job that taught the fact."""

    url: str
    client: OpenAI
    service: FinetuneService
    job: Any
    models_dir: Path


def _ask(client: OpenAI, model: str, **kw: Any) -> Any:
    body = {"messages": [{"role": "user", "content": HELD_OUT}], "max_tokens": 16, "temperature": 0, **kw}
    return client.chat.completions.create(model=model, **body)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[Served]:
    """Train one 12-step LoRA job through the SDK with a real worker, then keep the service up for every test."""
    home = tmp_path_factory.mktemp("serving-home")
    common = {"home": home, "models_dir": models_dir, "api_token": None}
    settings = FinetuneSettings(**common, serving_max_queue=1, serving_max_loaded=1, serving_max_tokens=64)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in ENV.items():
            mp.setenv(key, value)
        service = FinetuneService(settings)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(
                build_app(settings, service=service, host="127.0.0.1", port=port), port=port, log_level="warning"
            )
        )
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:  # uvicorn exposes a flag, not an awaitable, for a thread-hosted server
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        url = f"http://127.0.0.1:{port}"
        client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=300)
        rows = [
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": ANSWER}]} for q in TRAIN_Q
        ]
        rows.append({"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4."}]})
        data = "".join(json.dumps(r) + "\n" for r in rows).encode()
        file = client.files.create(file=("fact.jsonl", io.BytesIO(data)), purpose="fine-tune")
        # 12 steps at lr 1e-3 on 5 examples: the seeded run tests/servers/worker/test_end_to_end.py also uses.
        hyper = {"batch_size": 4, "learning_rate": 1e-3, "max_steps": 12, "max_length": 128, "lr_scheduler": "constant"}
        job = client.fine_tuning.jobs.create(
            model=BASE,
            training_file=file.id,
            seed=0,
            suffix="orion",
            method={"type": "supervised", "supervised": {"hyperparameters": hyper}},  # type: ignore[typeddict-item]
            extra_body={"peft": LORA},
        )
        worker = WorkerSettings(**common, train_threads=1, heartbeat_seconds=0.5, poll_seconds=0.2)
        Worker(worker, progress=False).run(job_id=job.id)
        job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "succeeded", job.error
        yield Served(url, client, service, job, models_dir)
        server.should_exit = True
        thread.join(30)
        service.close()


def test_models_list_the_base_and_the_tuned_model(served: Served) -> None:
    models = {m.id: m for m in served.client.models.list()}
    assert set(models) == {BASE, served.job.fine_tuned_model}
    assert models[BASE].object == "model" and models[BASE].owned_by == "ragtune"
    tuned = served.client.models.retrieve(served.job.fine_tuned_model)
    assert tuned.id == served.job.fine_tuned_model and tuned.owned_by == "org-ragtune"
    assert tuned.model_extra and tuned.model_extra["x_ragtune"] == {"kind": "lora", "job_id": served.job.id}


def test_the_tuned_model_answers_a_held_out_paraphrase_and_the_base_does_not(served: Served) -> None:
    base = _ask(served.client, BASE)
    tuned = _ask(served.client, served.job.fine_tuned_model)
    assert FACT not in (base.choices[0].message.content or "")
    assert FACT in (tuned.choices[0].message.content or ""), tuned.choices[0].message.content
    assert tuned.model == served.job.fine_tuned_model and tuned.object == "chat.completion"
    assert tuned.usage and tuned.usage.prompt_tokens > 10 and 0 < tuned.usage.completion_tokens <= 16
    assert tuned.usage.total_tokens == tuned.usage.prompt_tokens + tuned.usage.completion_tokens

    stream = _ask(served.client, served.job.fine_tuned_model, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == tuned.choices[0].message.content  # same greedy answer, delivered piece by piece
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 2
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == tuned.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage == tuned.usage


def test_generation_parameters_change_the_answer_as_asked(served: Served) -> None:
    model = served.job.fine_tuned_model
    full = _ask(served.client, model).choices[0].message.content or ""
    stopped = _ask(served.client, model, stop=["Lantern"]).choices[0]
    assert stopped.message.content == full.split("Lantern")[0] and stopped.finish_reason == "stop"
    short = served.client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": HELD_OUT}], max_completion_tokens=3, temperature=0
    )
    assert short.choices[0].finish_reason == "length" and short.usage and short.usage.completion_tokens == 3
    sampled = [_ask(served.client, BASE, temperature=1.5, seed=s).choices[0].message.content for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] != sampled[2]


@pytest.mark.parametrize(
    ("change", "status", "param", "code"),
    [
        ({"n": 2}, 400, "n", None),
        ({"temperature": 5}, 400, "temperature", None),
        ({"top_p": 0}, 400, "top_p", None),
        ({"max_tokens": 100_000}, 400, "max_tokens", None),
        ({"model": "gpt-9"}, 404, "model", "model_not_found"),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
            400,
            "tools",
            "tools_not_supported",
        ),
        ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "messages", None),
    ],
)
def test_bad_requests_get_openai_shaped_errors(
    served: Served, change: dict[str, Any], status: int, param: str, code: str | None
) -> None:
    body = {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **change}
    with pytest.raises(openai.APIStatusError) as err:
        served.client.chat.completions.create(**body)
    assert err.value.status_code == status
    error = err.value.body
    assert isinstance(error, dict) and error["param"] == param and error["code"] == code, error
    assert error["type"] == "invalid_request_error" and len(error["message"]) > 15


def test_requests_beyond_the_queue_bound_get_429(served: Served) -> None:
    # serving_max_queue=1: an open stream holds the only place until it is read to the end.
    stream = _ask(served.client, BASE, stream=True)
    with pytest.raises(openai.RateLimitError) as err:
        _ask(served.client, BASE)
    assert err.value.response.headers["retry-after"] == "2"
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "rate_limit_exceeded"
    assert "".join(c.choices[0].delta.content or "" for c in stream)
    assert _ask(served.client, BASE).choices[0].message.content  # the place is free again


def test_adapters_are_hot_swapped_and_lru_bounded(served: Served) -> None:
    # A second tuned model (a copy of the first adapter) with serving_max_loaded=1 evicts the first on use.
    src = Path(served.job.result_files[0])
    twin_id = new_id("ftjob")
    twin_dir = src.parent.parent / twin_id
    shutil.copytree(src, twin_dir / "adapter")
    twin = Job(
        id=twin_id,
        created_at=int(time.time()),
        model=BASE,
        status=JobStatus.succeeded,
        training_file=served.job.training_file,
        fine_tuned_model=f"ft:{BASE}:org-ragtune:twin:{twin_id}",
        result_files=[str(twin_dir / "adapter")],
        output_dir=str(twin_dir),
    )
    served.service.store.create_job(twin)
    engine = get_serving(served.service).engine
    for model in (twin.fine_tuned_model, served.job.fine_tuned_model, twin.fine_tuned_model):
        assert FACT in (_ask(served.client, model).choices[0].message.content or "")
        assert engine.loaded() == [model]
    assert FACT not in (_ask(served.client, BASE).choices[0].message.content or "")  # adapter off for the base
    served.client.models.delete(twin.fine_tuned_model)


def test_serving_md_commands_name_the_adapter_and_its_python_snippet_runs(served: Served) -> None:
    adapter = served.job.result_files[0]
    text = (Path(adapter).parent / "SERVING.md").read_text()
    assert f"--enable-lora --max-lora-rank 64 --lora-modules {served.job.id}={adapter}" in text
    assert f"\nADAPTER {adapter}\n" in text and "\nFROM " in text
    snippet = re.search(r"```python\n(.*?)```", text, re.S)
    assert snippet, text
    code = snippet.group(1).replace("Hello!", HELD_OUT)
    env = {**os.environ, **ENV, "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    assert FACT in run.stdout, run.stdout


async def test_mcp_finetune_chat_answers_with_the_tuned_model(served: Served) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=300)) as http:
        async with Client(streamable_http_client(f"{served.url}/mcp", http_client=http)) as mcp:
            args = {"model": served.job.fine_tuned_model, "messages": [{"role": "user", "content": HELD_OUT}]}
            reply = (await mcp.call_tool("finetune_chat", {**args, "max_tokens": 16})).structured_content
            unknown = await mcp.call_tool("finetune_chat", {**args, "model": "ft:nope:x:y:ftjob-0"})
    assert reply and FACT in reply["reply"] and reply["model"] == served.job.fine_tuned_model
    assert reply["usage"]["completion_tokens"] > 0 and reply["finish_reason"] in ("stop", "length")
    assert unknown.is_error and "does not exist" in unknown.content[0].text  # type: ignore[union-attr]


def test_deleting_a_tuned_model_removes_it_and_base_models_stay(served: Served) -> None:
    model = served.job.fine_tuned_model
    with pytest.raises(openai.BadRequestError) as err:
        served.client.models.delete(BASE)
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "model_not_deletable"
    deleted = served.client.models.delete(model)
    assert deleted.id == model and deleted.deleted
    assert not Path(served.job.result_files[0]).exists()
    assert model not in {m.id for m in served.client.models.list()}
    with pytest.raises(openai.NotFoundError) as err:
        _ask(served.client, model)
    assert isinstance(err.value.body, dict) and err.value.body["code"] == "model_not_found"
    assert "deleted" in err.value.body["message"]
