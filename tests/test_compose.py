"""compose.yaml: valid for a compose implementation, consistent with the settings, and every command starts."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from compose_spec import PyCompose

from ragtune.config_docs import collect

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "compose.yaml"
POSTGRES_OVERRIDE = ROOT / "compose.postgres.yaml"
TOKEN_REF = "${RAGTUNE_API_TOKEN:?set RAGTUNE_API_TOKEN in .env}"
EXPECTED = {
    "retrieval",
    "finetune",
    "worker",
    "worker-cpu",
    "coordinator",
    "research",
    "finetune-agent",
    "ray-head",
    "ray-worker",
    "postgres",
}
RAGTUNE_SERVICES = EXPECTED - {"postgres"}  # the database is the stock pgvector image, not ours
RAY_JOBS_PORT = 8265
PORTS = {"retrieval": 8701, "finetune": 8702, "coordinator": 8711, "research": 8712, "finetune-agent": 8713}
HEALTH = {"retrieval": "/health", "finetune": "/health"} | dict.fromkeys(
    ("coordinator", "research", "finetune-agent"), "/.well-known/agent-card.json"
)


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    """The compose file as plain data."""
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_compose_spec_parser_accepts_the_file() -> None:
    parsed = PyCompose.from_yaml(COMPOSE.read_text(encoding="utf-8"))
    parsed.validate()  # every volume/network a service names is declared
    assert set(parsed.service_names()) == EXPECTED


def test_compose_spec_parser_rejects_a_broken_file() -> None:
    """The parser is strict, so the acceptance above means something."""
    broken = COMPOSE.read_text(encoding="utf-8").replace("count: all", "count: every", 1)
    with pytest.raises(ValueError, match="count"):
        PyCompose.from_yaml(broken)


def _docker_compose() -> list[str] | None:
    """Return a compose CLI that can run `config` without an engine, or None."""
    for cmd in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(cmd[0]) is None:
            continue
        probe = subprocess.run([*cmd, "version"], capture_output=True, text=True, timeout=30)
        if probe.returncode == 0:
            return cmd
    return None


def test_docker_compose_config_when_available(tmp_path: Path) -> None:
    cli = _docker_compose()
    if cli is None:
        pytest.skip("no `docker compose` plugin here; the compose-spec parser checks above still ran")
    env = {**os.environ, "RAGTUNE_API_TOKEN": "t0ken"}
    ok = subprocess.run([*cli, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    env.pop("RAGTUNE_API_TOKEN")
    refused = subprocess.run(
        [*cli, "-f", str(COMPOSE), "config", "-q"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode != 0 and "RAGTUNE_API_TOKEN" in refused.stderr


def test_every_service_requires_the_token_and_names_real_settings(spec: dict[str, Any]) -> None:
    known = {doc.env for doc in collect()}
    for name, service in spec["services"].items():
        if name not in RAGTUNE_SERVICES:
            continue
        env = service["environment"]
        assert env["RAGTUNE_API_TOKEN"] == TOKEN_REF, name
        unknown = {key for key in env if key.startswith("RAGTUNE_")} - known
        assert not unknown, f"{name} sets variables no settings class reads: {unknown}"
        assert service["env_file"][0]["path"] == ".env"
        assert {"data:/data", "models:/models"} <= set(service["volumes"]), name
    assert set(spec["volumes"]) == {"data", "models", "pgdata"}


def test_gpu_worker_reserves_nvidia_devices_and_cpu_worker_does_not(spec: dict[str, Any]) -> None:
    services = spec["services"]
    devices = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "profiles" not in services["worker"]
    assert services["worker-cpu"]["profiles"] == ["cpu"]
    assert "deploy" not in services["worker-cpu"]
    assert services["worker-cpu"]["command"] == services["worker"]["command"]


def test_ray_profile_points_the_finetune_service_at_a_head_with_a_gpu_node(spec: dict[str, Any]) -> None:
    services = spec["services"]
    head, node, finetune = services["ray-head"], services["ray-worker"], services["finetune"]
    assert head["profiles"] == node["profiles"] == ["ray"]
    assert head["build"]["args"]["EXTRAS"] == "train,ray" and node["image"] == head["image"]
    assert "--head" in head["command"] and head["command"][head["command"].index("--dashboard-port") + 1] == "8265"
    assert head["ports"] == [f"127.0.0.1:{RAY_JOBS_PORT}:{RAY_JOBS_PORT}"]
    assert node["command"][node["command"].index("--address") + 1] == "ray-head:6379"
    assert node["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert finetune["environment"]["RAGTUNE_RAY_ADDRESS"] == f"http://ray-head:{RAY_JOBS_PORT}"
    assert "RAGTUNE_DISPATCH" not in finetune["environment"]  # local unless .env says ray
    token = "${RAY_AUTH_TOKEN:-}"  # one token for the head, its nodes and the Jobs client
    assert head["environment"]["RAY_AUTH_TOKEN"] == node["environment"]["RAY_AUTH_TOKEN"] == token
    assert finetune["environment"]["RAGTUNE_RAY_TOKEN"] == token
    assert head["environment"]["RAY_AUTH_MODE"] == node["environment"]["RAY_AUTH_MODE"] == "token"


def test_ports_healthchecks_and_urls_match_the_contract(spec: dict[str, Any]) -> None:
    services = spec["services"]
    for name, port in PORTS.items():
        service = services[name]
        assert service["ports"] == [f"127.0.0.1:{port}:{port}"], name
        command = service["command"]
        assert command[command.index("--port") + 1] == str(port)
        # Servers listen on every interface; agents bind (and so advertise in their card) their service name.
        host = "0.0.0.0" if name in ("retrieval", "finetune") else name
        assert command[command.index("--host") + 1] == host
        probe = " ".join(service["healthcheck"]["test"])
        assert f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}{HEALTH[name]}" in probe, name
    for service in services.values():
        for value in service.get("environment", {}).values():
            for host, port in re.findall(r"http://([a-z-]+):(\d+)", str(value)):
                assert host in services and {**PORTS, "ray-head": RAY_JOBS_PORT}[host] == int(port), value


def test_agents_reach_their_peers_by_service_name(spec: dict[str, Any]) -> None:
    """Inside a container 127.0.0.1 is the container itself, so `.env`'s loopback URLs must be overridden."""
    peers = {
        "RAGTUNE_RETRIEVAL_URL": "http://retrieval:8701/mcp",
        "RAGTUNE_FINETUNE_URL": "http://finetune:8702/mcp",
        "RAGTUNE_RESEARCH_AGENT_URL": "http://research:8712",
        "RAGTUNE_FINETUNE_AGENT_URL": "http://finetune-agent:8713",
    }
    for name in ("coordinator", "research", "finetune-agent"):
        env = spec["services"][name]["environment"]
        assert {key: env.get(key) for key in peers} == peers, name
    for name, service in spec["services"].items():
        assert not any("127.0.0.1" in str(v) for v in service.get("environment", {}).values()), name


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _local_command(command: list[str], port: int | None) -> list[str]:
    """Map a container command onto this machine: this Python, loopback, a free port."""
    local = [sys.executable if part == "python" else part for part in command]
    if port is not None:
        local[local.index("--host") + 1] = "127.0.0.1"
        local[local.index("--port") + 1] = str(port)
    return local


def _local_env(service: dict[str, Any], home: Path) -> dict[str, str]:
    """The service's environment with container paths mapped into a temporary home."""
    env = {**os.environ, "RAGTUNE_API_TOKEN": "compose-test-token", "HF_HUB_OFFLINE": "1"}
    for key, value in service["environment"].items():
        if key == "RAGTUNE_API_TOKEN":
            continue
        value = (
            str(value)
            .replace("/app/docs", str(ROOT / "docs"))
            .replace("/data", str(home))
            .replace("/models", str(home / "models"))
        )
        env[key] = re.sub(r"http://([a-z-]+):(\d+)", "http://127.0.0.1:9", value)  # peers are not started here
    # Agents warm the embedded chat model up at start (a minute on 2 cores, covered by tests/agents); here a
    # remote model that is never called keeps the check about the command, the card and the port.
    env |= {"RAGTUNE_CHAT_MODEL": "unused", "RAGTUNE_CHAT_BASE_URL": "http://127.0.0.1:9/v1"}
    return env


def _wait_http(url: str, proc: subprocess.Popen[bytes], deadline_s: float) -> httpx.Response:
    """Poll `url` until it answers, the process dies, or the deadline passes."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}: {proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        try:
            return httpx.get(url, timeout=2)
        except httpx.TransportError:
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {deadline_s}s")


@pytest.mark.parametrize("name", sorted(HEALTH))
def test_service_command_starts_and_answers_its_healthcheck(name: str, spec: dict[str, Any], tmp_path: Path) -> None:
    service = spec["services"][name]
    port = _free_port()
    proc = subprocess.Popen(
        _local_command(service["command"], port),
        cwd=ROOT,
        env=_local_env(service, tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        response = _wait_http(f"http://127.0.0.1:{port}{HEALTH[name]}", proc, deadline_s=90)
        assert response.status_code == 200, response.text
        if name in ("coordinator", "research", "finetune-agent"):
            # The card advertises the host the agent binds, which is why compose binds the service name.
            urls = [i["url"] for i in response.json()["supportedInterfaces"]]
            assert urls and all(u.startswith(f"http://127.0.0.1:{port}") for u in urls), urls
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.mark.parametrize("name", ["worker", "worker-cpu"])
def test_worker_command_starts_on_the_job_store(name: str, spec: dict[str, Any], tmp_path: Path) -> None:
    """The worker opens the job store named by the service's environment; `--once` returns when none is queued."""
    service = spec["services"][name]
    env = _local_env(service, tmp_path)
    result = subprocess.run(
        [*_local_command(service["command"], None), "--once"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "0 job(s) processed" in result.stderr
    assert (Path(env["RAGTUNE_HOME"]) / "jobs.db").exists()


# --- the `postgres` profile and compose.postgres.yaml -------------------------------------------------------------
class _Override:
    """A value tagged `!override` (or `!reset`) in an override file: it replaces the base value instead of merging."""

    def __init__(self, value: Any) -> None:
        self.value = value


class _ComposeLoader(yaml.SafeLoader):
    """yaml.SafeLoader plus compose's merge tags (`!override`, `!reset`)."""


def _tagged(loader: yaml.SafeLoader, node: yaml.Node) -> _Override:
    if isinstance(node, yaml.SequenceNode):
        return _Override(loader.construct_sequence(node, deep=True))
    if isinstance(node, yaml.MappingNode):
        return _Override(loader.construct_mapping(node, deep=True))
    return _Override(loader.construct_scalar(node))  # type: ignore[arg-type]


_ComposeLoader.add_constructor("!override", _tagged)
_ComposeLoader.add_constructor("!reset", lambda loader, node: _Override(None))


def _merge(base: Any, over: Any) -> Any:
    """Merge an override into a base the way `docker compose -f a -f b` does (mappings deep, lists appended)."""
    if isinstance(over, _Override):
        return over.value
    if isinstance(base, dict) and isinstance(over, dict):
        return {
            k: _merge(base[k], over[k]) if k in base and k in over else over.get(k, base.get(k)) for k in base | over
        }
    if isinstance(base, list) and isinstance(over, list):
        return base + [item for item in over if item not in base]
    return over  # a scalar, or `build: .` replaced by a mapping


def _published(ports: list[str]) -> set[int]:
    """Return the fixed host ports a service's `ports` entries publish (a range counts each; `ip::port` none)."""
    out: set[int] = set()
    for entry in ports:
        host = entry.rsplit(":", 1)[0].rsplit(":", 1)[-1]
        if host:
            first, _, last = host.partition("-")
            out |= set(range(int(first), int(last or first) + 1))
    return out


@pytest.fixture(scope="module")
def postgres_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """compose.yaml with compose.postgres.yaml applied, as `docker compose -f both` sees it."""
    override = yaml.load(POSTGRES_OVERRIDE.read_text(encoding="utf-8"), Loader=_ComposeLoader)  # noqa: S506
    return _merge(spec, override)


def test_postgres_profile_runs_pgvector_with_a_healthcheck_and_a_volume(spec: dict[str, Any]) -> None:
    pg = spec["services"]["postgres"]
    assert pg["profiles"] == ["postgres"] and pg["image"].startswith("pgvector/pgvector:pg1")
    assert pg["environment"]["POSTGRES_USER"] == "ragtune" and pg["environment"]["POSTGRES_DB"] == "ragtune"
    assert "pg_isready -U ragtune -d ragtune" in " ".join(pg["healthcheck"]["test"])
    assert pg["volumes"] == ["pgdata:/var/lib/postgresql/data"] and "pgdata" in spec["volumes"]
    assert pg["ports"] == ["127.0.0.1:5432:5432"]  # loopback only, for ragtune-migrate and pg_dump
    for name in RAGTUNE_SERVICES:  # without the override nothing depends on it: the SQLite default is unchanged
        assert "postgres" not in spec["services"][name].get("depends_on", {}), name
        assert "RAGTUNE_DATABASE_URL" not in spec["services"][name]["environment"], name


def test_postgres_override_points_every_ragtune_service_at_the_database(postgres_spec: dict[str, Any]) -> None:
    parsed = PyCompose.from_yaml(yaml.safe_dump(postgres_spec))  # the merged file, as strict as compose.yaml
    parsed.validate()
    assert set(parsed.service_names()) == EXPECTED
    services = postgres_spec["services"]
    pg = services["postgres"]
    for name in RAGTUNE_SERVICES:
        service = services[name]
        url = service["environment"]["RAGTUNE_DATABASE_URL"]
        assert url.startswith("postgresql://ragtune:${POSTGRES_PASSWORD:?") and url.endswith("@postgres:5432/ragtune")
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        assert service["environment"]["RAGTUNE_API_TOKEN"] == TOKEN_REF, name  # the base environment is kept
        assert {"data:/data", "models:/models"} <= set(service["volumes"]), name  # files stay on the shared volume
        if "build" in service:  # images that talk to PostgreSQL carry the postgres extra
            assert "postgres" in service["build"]["args"]["EXTRAS"].split(","), name
        assert "postgres" in service["image"], name
    assert services["ray-worker"]["image"] == services["ray-head"]["image"]
    assert pg["environment"]["POSTGRES_USER"] in services["finetune"]["environment"]["RAGTUNE_DATABASE_URL"]


def test_retrieval_can_scale_to_two_replicas_without_port_clashes(postgres_spec: dict[str, Any]) -> None:
    """`--scale retrieval=2` needs one free host port per replica; a fixed one would stop the second replica."""
    services = postgres_spec["services"]
    retrieval = services["retrieval"]
    assert retrieval["ports"] == ["127.0.0.1::8701"]  # each replica gets a free loopback port from Docker
    assert not _published(retrieval["ports"])
    assert _published(["127.0.0.1:8701:8701"]) == {8701}  # (the helper does see a fixed port)
    assert "container_name" not in retrieval  # a fixed container name cannot scale either
    # Peers reach every replica by service name; each replica's healthcheck probes itself.
    for agent in ("research", "finetune-agent", "coordinator"):
        assert services[agent]["environment"]["RAGTUNE_RETRIEVAL_URL"] == "http://retrieval:8701/mcp"
    assert "127.0.0.1:8701" in " ".join(retrieval["healthcheck"]["test"])


def test_docker_compose_config_with_the_postgres_override_when_available() -> None:
    cli = _docker_compose()
    if cli is None:
        pytest.skip("no `docker compose` plugin here; the merged spec was checked with compose-spec above")
    files = ["-f", str(COMPOSE), "-f", str(POSTGRES_OVERRIDE), "--profile", "postgres"]
    env = {**os.environ, "RAGTUNE_API_TOKEN": "t0ken", "POSTGRES_PASSWORD": "pw"}
    ok = subprocess.run([*cli, *files, "config", "-q"], env=env, capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    env.pop("POSTGRES_PASSWORD")
    refused = subprocess.run([*cli, *files, "config", "-q"], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr


@pytest.mark.parametrize("name", ["finetune", "worker-cpu"])
def test_service_command_starts_on_the_postgres_override(
    name: str, postgres_spec: dict[str, Any], tmp_path: Path, pg_url: str
) -> None:
    """The override's environment really selects PostgreSQL: the job store lands there, no jobs.db on disk."""
    import psycopg

    service = postgres_spec["services"][name]
    env = _local_env(service, tmp_path)
    assert "@postgres:5432/ragtune" in env["RAGTUNE_DATABASE_URL"]
    env["RAGTUNE_DATABASE_URL"] = pg_url  # the compose network's `postgres` is this test's server
    if name == "worker-cpu":
        result = subprocess.run(
            [*_local_command(service["command"], None), "--once"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0 and "0 job(s) processed" in result.stderr, result.stderr
    else:
        port = _free_port()
        proc = subprocess.Popen(
            _local_command(service["command"], port),
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            assert _wait_http(f"http://127.0.0.1:{port}/health", proc, deadline_s=90).status_code == 200
        finally:
            proc.terminate()
            proc.wait(timeout=15)
    assert not (Path(env["RAGTUNE_HOME"]) / "jobs.db").exists()
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("select version from ragtune_schema where component = 'jobs'").fetchone()
    assert row is not None and row[0] >= 1
