"""MCP tools through real MCP clients: in memory, over stdio, and over streamable HTTP with a token."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr
from ragtune.servers.finetune.server import build_server
from ragtune.servers.finetune.service import FinetuneService

from ragtune.config import FinetuneSettings

from .conftest import BAD, CHAT, PREFERENCE

ROOT = Path(__file__).resolve().parents[3]
CONTRACT_TOOLS = {
    "finetune_upload_dataset",
    "finetune_validate_dataset",
    "finetune_recommend_method",
    "finetune_estimate_memory",
    "finetune_create_job",
    "finetune_get_job",
    "finetune_list_jobs",
    "finetune_cancel_job",
    "finetune_job_events",
    "finetune_list_checkpoints",
}


async def call(c: Client, name: str, **args: Any) -> dict[str, Any]:
    result = await c.call_tool(name, args)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def error(c: Client, name: str, **args: Any) -> str:
    result = await c.call_tool(name, args)
    assert result.is_error
    return result.content[0].text  # type: ignore[union-attr]


async def test_tools_cover_the_contract_and_describe_themselves(service: FinetuneService) -> None:
    async with Client(build_server(service.settings, service=service)) as c:
        tools = {t.name: t for t in (await c.list_tools()).tools}
    assert CONTRACT_TOOLS <= set(tools)
    assert all(t.description and t.output_schema for t in tools.values())
    assert tools["finetune_get_job"].annotations.read_only_hint  # type: ignore[union-attr]


async def test_a_one_line_jsonl_is_validated_as_text_not_parsed_into_an_object(service: FinetuneService) -> None:
    one = CHAT.splitlines()[0]
    async with Client(build_server(service.settings, service=service)) as c:
        checked = await call(c, "finetune_validate_dataset", content=one)
        assert checked["valid"] and checked["examples"] == 1
        bad = await call(c, "finetune_validate_dataset", content='{"prompt": "p"}')
        assert not bad["valid"] and [p["line"] for p in bad["problems"]] == [1]
        assert "exactly one" in await error(c, "finetune_validate_dataset")


async def test_dataset_advice_and_job_lifecycle_in_memory(service: FinetuneService) -> None:
    async with Client(build_server(service.settings, service=service)) as c:
        bad = await call(c, "finetune_validate_dataset", content=BAD)
        assert bad["valid"] is False and [p["line"] for p in bad["problems"]] == [13, 14]
        good = await call(c, "finetune_validate_dataset", content=CHAT)
        assert good["valid"] and good["format"] == "chat" and good["examples"] == 12
        assert "no assistant turn" in await error(c, "finetune_upload_dataset", content=BAD)
        assert service.list_files().data == []

        rec = await call(c, "finetune_recommend_method", goal="preference", n_examples=3000, has_preference_pairs=True)
        assert rec["method"] == "dpo" and rec["job_method"]["type"] == "dpo" and rec["reasons"]
        est = await call(c, "finetune_estimate_memory", params_b=7, method="full", precision="bf16")
        assert est["weights_gb"] == 14.0 and est["total_gb"] > 100 and est["fits"] == ["H200"]
        assert "unknown model" in await error(c, "finetune_estimate_memory", model="no-such-model")

        file = await call(c, "finetune_upload_dataset", content=PREFERENCE, filename="pairs.jsonl")
        assert file["format"] == "preference" and file["report"]["examples"] == 12
        job = await call(
            c,
            "finetune_create_job",
            training_file=file["id"],
            method="dpo",
            beta=0.3,
            hyperparameters={"max_steps": 5},
            peft={"type": "lora", "r": 4},
        )
        assert job["status"] == "queued" and job["hyperparameters"]["beta"] == 0.3
        assert job["hyperparameters"]["max_steps"] == 5 and job["peft"]["r"] == 4
        assert "needs chat records" in await error(c, "finetune_create_job", training_file=file["id"])

        view = await call(c, "finetune_get_job", job_id=job["id"])
        assert view["job"]["status"] == "queued" and "worker" in view["next_step"]
        service.store.add_event(job["id"], "step 1", type="metrics", data={"step": 1, "train_loss": 0.69})
        view = await call(c, "finetune_get_job", job_id=job["id"])
        assert view["latest_metrics"] == {"step": 1, "train_loss": 0.69}

        listed = await call(c, "finetune_list_jobs", limit=5)
        assert [j["id"] for j in listed["jobs"]] == [job["id"]] and listed["has_more"] is False
        assert (await call(c, "finetune_pause_job", job_id=job["id"]))["status"] == "paused"
        assert (await call(c, "finetune_cancel_job", job_id=job["id"]))["status"] == "cancelled"
        assert "it cannot become cancelled" in await error(c, "finetune_cancel_job", job_id=job["id"])
        events = await call(c, "finetune_job_events", job_id=job["id"], limit=50, order="asc")
        messages = [e["message"] for e in events["events"]]
        assert messages[0].startswith("created fine-tuning job: dpo") and messages[-1] == "cancelled by request"
        assert (await call(c, "finetune_list_checkpoints", job_id=job["id"]))["checkpoints"] == []
        assert "no fine-tuning job with id 'ftjob-nope'" in await error(c, "finetune_get_job", job_id="ftjob-nope")

        resource = await c.read_resource(f"finetune://jobs/{job['id']}")
        assert json.loads(resource.contents[0].text)["status"] == "cancelled"  # type: ignore[union-attr]


async def test_upload_by_path_only_under_allowed_roots(service: FinetuneService, tmp_path: Path) -> None:
    root = service.settings.finetune_roots[0]
    (root / "train.jsonl").write_text(CHAT)
    outside = tmp_path / "secret.jsonl"
    outside.write_text(CHAT)
    (root / "sneaky.jsonl").symlink_to(outside)
    async with Client(build_server(service.settings, service=service)) as c:
        file = await call(c, "finetune_upload_dataset", path=str(root / "train.jsonl"))
        assert file["filename"] == "train.jsonl" and file["format"] == "chat"
        assert "outside the allowed folders" in await error(c, "finetune_upload_dataset", path=str(outside))
        assert "outside the allowed folders" in await error(
            c, "finetune_upload_dataset", path=str(root / "sneaky.jsonl")
        )
        assert "no file at" in await error(c, "finetune_validate_dataset", path=str(root / "missing.jsonl"))
        assert "exactly one of path" in await error(c, "finetune_upload_dataset")


async def test_stdio_round_trip(settings: FinetuneSettings) -> None:
    env = {
        "RAGTUNE_HOME": str(settings.home),
        "PATH": os.environ["PATH"],
        "HF_HUB_OFFLINE": "1",
        "RAGTUNE_LOG_LEVEL": "WARNING",
    }
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "ragtune.servers.finetune", "serve", "--transport", "stdio"],
        env=env,
        cwd=str(ROOT),
    )
    async with Client(params, read_timeout_seconds=60) as c:
        file = await call(c, "finetune_upload_dataset", content=CHAT)
        job = await call(c, "finetune_create_job", training_file=file["id"], hyperparameters={"n_epochs": 1})
        assert job["status"] == "queued" and job["hyperparameters"]["n_epochs"] == 1
        assert (await call(c, "finetune_get_job", job_id=job["id"]))["job"]["id"] == job["id"]
    assert (settings.home / "jobs.db").exists()  # the child wrote the same store the test points at


async def test_http_mcp_requires_the_token(
    settings: FinetuneSettings, serve: Callable[[FinetuneSettings], str]
) -> None:
    url = serve(settings.model_copy(update={"api_token": SecretStr("tok")}))
    async with httpx2.AsyncClient(timeout=10) as raw:
        denied = await raw.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
        metadata = await raw.get(f"{url}/.well-known/oauth-protected-resource/mcp")
    # A shared bearer token is not OAuth: advertise no authorization server (issue #12).
    assert denied.status_code == 401 and denied.headers["www-authenticate"].startswith("Bearer")
    assert "resource_metadata" not in denied.headers["www-authenticate"] and metadata.status_code == 404
    headers = {"Authorization": "Bearer tok"}
    async with httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http:
        async with Client(streamable_http_client(f"{url}/mcp", http_client=http)) as c:
            est = await call(c, "finetune_estimate_memory", model="smollm2-135m", method="lora")
            assert est["params_b"] == pytest.approx(0.135, abs=0.001)
            file = await call(c, "finetune_upload_dataset", content=CHAT)
    async with httpx2.AsyncClient(headers=headers, timeout=10) as http:
        listed = (await http.get(f"{url}/v1/files")).json()
    assert [f["id"] for f in listed["data"]] == [file["id"]]  # MCP and REST share one store


async def test_upload_reports_progress(service: FinetuneService) -> None:
    rows = CHAT.splitlines() * 200  # 2,400 lines: progress every 1,000 and at the end
    seen: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total))

    async with Client(build_server(service.settings, service=service)) as c:
        result = await c.call_tool(
            "finetune_upload_dataset", {"content": "\n".join(rows)}, progress_callback=on_progress
        )
    assert not result.is_error
    assert seen == [(1000, 2400), (2000, 2400), (2400, 2400)]
