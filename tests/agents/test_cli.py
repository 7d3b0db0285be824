"""The agents' shared command line: the card advertises --public-url, else the bind address."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _card_urls(port: int, extra: list[str], env: dict[str, str]) -> list[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragtune.agents.coordinator", "--port", str(port), *extra],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"agent exited: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
            try:
                card = httpx.get(f"http://127.0.0.1:{port}/.well-known/agent-card.json", timeout=2).json()
                return [i["url"] for i in card["supportedInterfaces"]]
            except httpx.HTTPError:
                time.sleep(0.2)
        pytest.fail("the agent did not serve its card within 60 s")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize("public_url", [None, "http://coordinator.internal:9000"])
def test_card_advertises_the_public_url_or_the_bind_address(public_url: str | None, free_port, tmp_path) -> None:
    env = {
        **os.environ,
        "RAGTUNE_HOME": str(tmp_path),
        "RAGTUNE_CHAT_MODEL": "scripted",
        "RAGTUNE_CHAT_BASE_URL": "http://127.0.0.1:9/v1",
        "RAGTUNE_CHAT_API_KEY": "unused",
    }
    port = free_port()
    urls = _card_urls(port, ["--public-url", public_url] if public_url else [], env)
    expected = public_url or f"http://127.0.0.1:{port}"
    assert urls and all(u.startswith(expected) for u in urls), urls


def test_an_agent_logs_no_line_per_client_request(free_port, tmp_path) -> None:
    # Regression for issue #12: the HTTP/MCP clients an agent drives logged one INFO line per request.
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "RAGTUNE_HOME": str(tmp_path),
        "RAGTUNE_RESEARCH_AGENT_URL": url,  # its own card stands in for both peers' cards
        "RAGTUNE_FINETUNE_AGENT_URL": url,
    }
    log = tmp_path / "coordinator.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ragtune.agents.coordinator", "--port", str(port)], cwd=ROOT, env=env, stderr=out
        )
        try:
            deadline, health = time.monotonic() + 60, None
            while health is None and time.monotonic() < deadline:
                try:
                    health = httpx.get(f"{url}/health", timeout=5).json()
                except httpx.HTTPError:
                    time.sleep(0.2)
            assert health == {"ok": True, "agent": "ragtune-coordinator", "peers": {"research": True, "finetune": True}}
        finally:
            proc.terminate()
            proc.wait(timeout=20)
    text = log.read_text(errors="replace")
    assert "Application startup complete" in text  # INFO lines are logged...
    assert "HTTP Request:" not in text  # ...but not the client's two card requests
