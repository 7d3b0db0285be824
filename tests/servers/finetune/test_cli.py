"""The command line: validate (exit 1 with line numbers), estimate, recommend, claude-config, --help."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from ragtune.servers.finetune.__main__ import main

from .conftest import BAD, CHAT

ROOT = Path(__file__).resolve().parents[3]


def test_validate_prints_a_report_or_the_bad_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    good.write_text(CHAT)
    bad.write_text(BAD)
    assert main(["validate", str(good)]) == 0
    out = capsys.readouterr().out
    assert "examples" in out and "12" in out and "chat" in out
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "line 13: no assistant turn" in out and "line 14: bad JSON" in out


def test_estimate_recommend_and_claude_config(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "--params", "7B", "--method", "full", "--precision", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "14.00" in out and "H200" in out
    assert main(["estimate", "--model", "nonesuch"]) == 2
    assert main(["recommend", "--goal", "preference", "--examples", "2000", "--pairs"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dpo") and '"type": "dpo"' in out
    assert main(["claude-config"]) == 0
    config = json.loads(capsys.readouterr().out)
    entry = config["mcpServers"]["ragtune-finetune"]
    assert entry["args"][-2:] == ["--transport", "stdio"] and Path(entry["command"]).is_absolute()


def test_help_runs_as_a_module() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "ragtune.servers.finetune", "serve", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "--transport" in done.stdout


def test_http_refuses_a_public_bind_without_a_token(capsys: pytest.CaptureFixture[str]) -> None:
    from ragtune.config import InsecureBindError

    assert main(["serve", "--transport", "http", "--host", "0.0.0.0", "--port", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "RAGTUNE_API_TOKEN" in err and "\n" not in err  # one line, no traceback
    from ragtune.servers.finetune.app import build_app

    from ragtune.config import FinetuneSettings

    with pytest.raises(InsecureBindError):
        build_app(FinetuneSettings(), host="0.0.0.0")


def test_serve_http_subprocess_answers_health_and_rest(tmp_path: Path) -> None:
    import os
    import socket
    import time

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {
        **os.environ,
        "RAGTUNE_HOME": str(tmp_path / "home"),
        "RAGTUNE_API_TOKEN": "t0k",
        "RAGTUNE_LOG_LEVEL": "WARNING",
    }
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ragtune.servers.finetune",
                "serve",
                "--transport",
                "http",
                "--port",
                str(port),
            ],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline, health = time.monotonic() + 30, None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.1)  # the port opens when uvicorn is ready; there is no event to await
        assert health is not None and health.json()["status"] == "ok", log.read_text()
        files = httpx.get(f"http://127.0.0.1:{port}/v1/files", headers={"Authorization": "Bearer t0k"}, timeout=5)
        assert files.json() == {"object": "list", "data": [], "has_more": False}
    finally:
        proc.terminate()
        proc.wait(timeout=15)
