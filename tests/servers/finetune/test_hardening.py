"""Regression tests for issue #12 on the fine-tuning server: auth before body, streamed size limits, one
bearer parser, guarded docs, bounds, quotas, time-boxed regex rewards, MCP session expiry and cap."""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from ragtune.servers.finetune.app import build_app
from ragtune.servers.finetune.service import FinetuneService, ServiceError
from ragtune.servers.worker.recipes.rewards import make_reward

from ragtune.config import FinetuneSettings, InsecureBindError, check_bind

from .conftest import CHAT

TOKEN = "x7Qp2-LmN9vRt4sZ"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CHUNK = 64 * 1024
INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


class Body:
    """A streamed request body of `total` bytes that records how much of it the server pulled."""

    def __init__(self, total: int) -> None:
        self.total, self.pulled = total, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        head = b'--b\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n\r\n'
        self.pulled += len(head)
        yield head
        while self.pulled < self.total:
            self.pulled += CHUNK
            yield b"a" * CHUNK


async def _post_streamed(settings: FinetuneSettings, body: Body, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=build_app(settings))  # pulls the body lazily, so `pulled` is exact
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        return await http.post(
            "/v1/files", content=body, headers={**headers, "Content-Type": "multipart/form-data; boundary=b"}
        )


async def test_an_upload_without_a_token_is_refused_before_its_body_is_read(settings: FinetuneSettings) -> None:
    secured = settings.model_copy(update={"api_token": SecretStr(TOKEN)})
    body = Body(200_000_000)
    r = await _post_streamed(secured, body, {})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert body.pulled == 0


async def test_an_oversized_streamed_upload_stops_at_the_limit(settings: FinetuneSettings) -> None:
    small = settings.model_copy(update={"api_token": SecretStr(TOKEN), "finetune_max_file_mb": 1.0})
    body = Body(50_000_000)
    r = await _post_streamed(small, body, AUTH)
    assert r.status_code == 413 and "RAGTUNE_FINETUNE_MAX_FILE_MB" in r.json()["error"]["message"]
    assert body.pulled <= 1_000_000 + 64 * 1024 + 2 * CHUNK
    assert not list((settings.home / "files").iterdir())


def test_docs_need_the_token_and_two_spaces_after_bearer_pass_rest_and_mcp(
    settings: FinetuneSettings, serve: Callable[[FinetuneSettings], str]
) -> None:
    url = serve(settings.model_copy(update={"api_token": SecretStr(TOKEN)}))
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert httpx.get(url + path, timeout=10).status_code == 401, path
        assert httpx.get(url + path, headers=AUTH, timeout=10).status_code == 200, path
    loose = {"Authorization": f"Bearer  {TOKEN}"}
    assert httpx.get(f"{url}/v1/files", headers=loose, timeout=10).status_code == 200
    assert httpx.post(f"{url}/mcp", json=INIT, headers={**MCP_HEADERS, **loose}, timeout=10).status_code == 200
    wrong = {"Authorization": f"Bearer {TOKEN}x"}
    assert httpx.post(f"{url}/mcp", json=INIT, headers={**MCP_HEADERS, **wrong}, timeout=10).status_code == 401


def test_a_weak_token_is_refused_for_a_public_bind(settings: FinetuneSettings) -> None:
    for weak in ("t", "aaaaaaaaaaaaaaaaaaaa", "short-token"):
        with pytest.raises(InsecureBindError, match="too weak"):
            check_bind("0.0.0.0", settings.model_copy(update={"api_token": SecretStr(weak)}))
    check_bind("0.0.0.0", settings.model_copy(update={"api_token": SecretStr(TOKEN)}))
    check_bind("127.0.0.1", settings.model_copy(update={"api_token": SecretStr("t")}))


def _job(http: TestClient, fid: str, **extra: Any) -> httpx.Response:
    return http.post("/v1/fine_tuning/jobs", json={"training_file": fid, **extra})


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 10**9}}}}, "n_epochs"),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 10**9}}}}, "batch_size"),
        (
            {"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 1e9}}}},
            "learning_rate_multiplier",
        ),
        ({"peft": {"type": "lora", "r": 10**6}}, "peft.r"),
        ({"seed": 2**70}, "seed"),
    ],
)
def test_out_of_range_hyperparameters_are_400(settings: FinetuneSettings, extra: dict, param: str) -> None:
    with TestClient(build_app(settings)) as http:
        fid = http.post("/v1/files", files={"file": ("c.jsonl", CHAT.encode())}, data={"purpose": "fine-tune"})
        r = _job(http, fid.json()["id"], **extra)
        assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text


def test_quotas_on_files_bytes_and_waiting_jobs_are_409(settings: FinetuneSettings) -> None:
    tight = settings.model_copy(update={"finetune_max_files": 2, "finetune_max_queued_jobs": 1})
    with TestClient(build_app(tight)) as http:
        up = {"files": {"file": ("c.jsonl", CHAT.encode())}, "data": {"purpose": "fine-tune"}}
        fid = http.post("/v1/files", **up).json()["id"]
        assert _job(http, fid).status_code == 200
        r = _job(http, fid)
        assert r.status_code == 409 and "RAGTUNE_FINETUNE_MAX_QUEUED_JOBS" in r.json()["error"]["message"]
        assert http.post("/v1/files", **up).status_code == 200
        r = http.post("/v1/files", **up)
        assert r.status_code == 409 and r.json()["error"]["code"] == "quota_exceeded"
    cap_mb = len(CHAT) * 1.5 / 1e6
    bytes_cap = settings.model_copy(update={"home": settings.home / "b", "finetune_max_total_upload_mb": cap_mb})
    with TestClient(build_app(bytes_cap)) as http:
        assert http.post("/v1/files", **up).status_code == 200
        r = http.post("/v1/files", **up)
        assert r.status_code == 409 and "RAGTUNE_FINETUNE_MAX_TOTAL_UPLOAD_MB" in r.json()["error"]["message"]


def test_unknown_status_filter_is_400(settings: FinetuneSettings) -> None:
    with TestClient(build_app(settings)) as http:
        r = http.get("/v1/fine_tuning/jobs", params={"status": "bogus"})
        assert r.status_code == 400 and r.json()["error"]["param"] == "status"
        assert http.get("/v1/fine_tuning/jobs", params={"status": "queued"}).status_code == 200


def test_a_catastrophic_regex_reward_is_time_boxed() -> None:
    reward = make_reward("regex:(a|aa)+$")
    start = time.monotonic()
    assert reward("a" * 5000 + "!", None) == 0.0
    assert time.monotonic() - start < 5
    assert make_reward("regex:^ok")("ok then", None) == 1.0


def _open_session(url: str) -> httpx.Response:
    return httpx.post(f"{url}/mcp", json=INIT, headers=MCP_HEADERS, timeout=10)


def test_mcp_sessions_expire_when_idle_and_are_capped(
    settings: FinetuneSettings, serve: Callable[[FinetuneSettings], str]
) -> None:
    url = serve(settings.model_copy(update={"mcp_session_idle_seconds": 0.5, "mcp_max_sessions": 2}))
    first = _open_session(url).headers["mcp-session-id"]
    assert _open_session(url).status_code == 200
    assert _open_session(url).status_code == 503  # the cap
    deadline = time.monotonic() + 10
    while (opened := _open_session(url)).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.2)  # the SDK reaps idle sessions on its own timer; polling here never touches them
    assert opened.status_code == 200  # idle sessions expired and freed their slots
    ping = {"jsonrpc": "2.0", "id": 2, "method": "ping"}
    headers = {**MCP_HEADERS, "mcp-session-id": first, "mcp-protocol-version": "2025-06-18"}
    assert httpx.post(f"{url}/mcp", json=ping, headers=headers, timeout=10).status_code == 404


def test_deeply_nested_json_in_an_upload_is_400_with_its_line(settings: FinetuneSettings) -> None:
    nested = CHAT + "[" * 100_000 + "]" * 100_000 + "\n"
    with TestClient(build_app(settings)) as http:
        r = http.post("/v1/files", files={"file": ("n.jsonl", nested.encode())}, data={"purpose": "fine-tune"})
    assert r.status_code == 400 and r.json()["error"]["problems"][0]["line"] == 13, r.text


def test_a_dataset_path_that_is_a_fifo_is_refused_without_blocking(settings: FinetuneSettings) -> None:
    fifo = settings.finetune_roots[0] / "train.jsonl"
    os.mkfifo(fifo)
    service = FinetuneService(settings)
    try:
        with pytest.raises(ServiceError, match="not a regular file"):
            service.read_path(str(fifo))
    finally:
        service.close()
