"""Regression for issue #12: an agent refused a 0.0.0.0 bind with a 14-line traceback; now one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("token", ["short"])  # no token and a weak one take the same path
def test_an_agent_refuses_a_public_bind_in_one_line(tmp_path: Path, token: str | None) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    env.update(RAGTUNE_HOME=str(tmp_path), **({"RAGTUNE_API_TOKEN": token} if token else {}))
    done = subprocess.run(
        [sys.executable, "-m", "ragtune.agents.research", "--host", "0.0.0.0", "--port", "1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    err = done.stderr.strip()
    assert done.returncode == 1 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "RAGTUNE_API_TOKEN" in err
