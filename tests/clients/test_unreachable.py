"""Regression for issue #12: with no server running, each client printed an 80-100-line traceback."""

from __future__ import annotations

import pytest

from .conftest import free_port, run_client


@pytest.mark.parametrize(
    ("script", "args", "hint"),
    [
        ("a2a_cli.py", ["http://127.0.0.1:{port}", "--card"], "is the agent running?"),
        ("finetune_openai.py", ["--base-url", "http://127.0.0.1:{port}/v1"], "ragtune.servers.finetune serve"),
        ("langchain_rag.py", ["--mcp-url", "http://127.0.0.1:{port}/mcp"], "ragtune.servers.retrieval serve"),
    ],
)
def test_a_client_says_in_one_line_that_the_server_is_not_running(script: str, args: list[str], hint: str) -> None:
    port = free_port()
    done = run_client(script, *[a.format(port=port) for a in args], timeout=120)
    err = done.stderr.strip()
    assert done.returncode == 1 and "Traceback" not in err, err
    assert len(err.splitlines()) == 1 and err.startswith("error: cannot connect") and hint in err, err
