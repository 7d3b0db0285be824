"""The command line every agent shares: where it binds, and the URL its card advertises to peers."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Sequence

from fastapi import FastAPI
from ragtune.agents.a2a_app import serve

from ragtune.config import AgentSettings, InsecureBindError, configure_logging

# One line per HTTP request of the clients an agent drives: following one job logged ~3,000 (issue #12).
CHATTY_LOGGERS = ("httpx", "httpx2", "httpcore", "mcp.client.streamable_http")


def quiet_client_logs(level: str) -> None:
    """Keep the per-request lines of HTTP and MCP clients out of INFO logs; RAGTUNE_LOG_LEVEL=DEBUG shows them."""
    if logging.getLevelName(level.upper()) != logging.DEBUG:
        for name in CHATTY_LOGGERS:
            logging.getLogger(name).setLevel(logging.WARNING)


def agent_parser(prog: str, description: str, port_env: str, default_port: int) -> argparse.ArgumentParser:
    """Return the parser with --host, --port and --public-url, for an agent to add its own flags to."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("--host", help="bind address (default RAGTUNE_AGENT_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help=f"port (default {port_env} or {default_port})")
    p.add_argument(
        "--public-url",
        help="URL peers reach this agent at, advertised in its card (default "
        "http://HOST:PORT); set it when the agent binds 0.0.0.0 or sits behind a proxy",
    )
    return p


def serve_agent(
    args: argparse.Namespace,
    port_of: Callable[[AgentSettings], int],
    make_app: Callable[[AgentSettings, str], FastAPI],
) -> None:
    """Read settings once, resolve host, port and advertised URL, and serve until stopped."""
    settings = AgentSettings()
    configure_logging(settings.log_level)
    quiet_client_logs(settings.log_level)
    host, port = args.host or settings.agent_host, args.port or port_of(settings)
    public_url = (args.public_url or f"http://{host}:{port}").rstrip("/")
    try:
        serve(make_app(settings, public_url), host, port, settings)
    except InsecureBindError as e:  # one line that says what to do, not a 14-line traceback (issue #12)
        raise SystemExit(f"error: {e}") from None


def run(
    prog: str,
    description: str,
    port_env: str,
    default_port: int,
    port_of: Callable[[AgentSettings], int],
    make_app: Callable[[AgentSettings, str], FastAPI],
    argv: Sequence[str] | None = None,
) -> None:
    """Parse the shared flags and serve an agent that has no flags of its own."""
    args = agent_parser(prog, description, port_env, default_port).parse_args(argv)
    serve_agent(args, port_of, make_app)
