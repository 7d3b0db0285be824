"""Command line of the retrieval server: serve (stdio|http), ingest, search, reembed, status, claude-config."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from ragtune.config import InsecureBindError, RetrievalSettings, check_bind, configure_logging


def build_parser() -> argparse.ArgumentParser:
    """Describe every subcommand (each has --help)."""
    parser = argparse.ArgumentParser(prog="python -m ragtune.servers.retrieval", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the MCP server", description="Run the MCP server over stdio or HTTP.")
    serve.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    serve.add_argument("--host", help="HTTP host (default RAGTUNE_RETRIEVAL_HOST)")
    serve.add_argument("--port", type=int, help="HTTP port (default RAGTUNE_RETRIEVAL_PORT)")
    ingest = sub.add_parser("ingest", help="ingest files or folders", description="Ingest files or folders.")
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--collection", help="collection (default RAGTUNE_RETRIEVAL_DEFAULT_COLLECTION)")
    ingest.add_argument("--text-field", default="text", help="text field of .json/.jsonl records")
    ingest.add_argument(
        "--embedder",
        help="embedder of a collection this ingest creates (default RAGTUNE_EMBEDDER); use `reembed` to change one",
    )
    ingest.add_argument("--force", action="store_true", help="accept a tuned --embedder whose verdict was 'worse'")
    ingest.add_argument(
        "--no-wait",
        action="store_true",
        help="return once text is searchable lexically; vectors then fill only while a server runs (`serve`)",
    )
    search = sub.add_parser("search", help="search a collection", description="Search and print a table of hits.")
    search.add_argument("query")
    search.add_argument("--k", type=int, default=5, help="how many hits to print (1-100, default 5)")
    search.add_argument("--mode", choices=["hybrid", "lexical", "vector"], default="hybrid")
    search.add_argument("--collection")
    search.add_argument("--filters", type=json.loads, help='JSON, e.g. \'{"year": {"gte": 2020}}\'')
    search.add_argument("--weight", type=float, default=0.5, help="vector share in hybrid fusion")
    search.add_argument("--json", action="store_true", help="print the result as JSON")
    reembed = sub.add_parser(
        "reembed",
        help="re-embed a collection with another embedder",
        description="Re-embed a collection with another embedder, with a progress bar; the old vectors answer "
        "searches until the new ones are complete, then the collection switches over in one transaction. "
        "Run it again to resume after an interruption.",
    )
    reembed.add_argument("--collection", help="collection (default RAGTUNE_RETRIEVAL_DEFAULT_COLLECTION)")
    reembed.add_argument("--embedder", help="e5-small, minilm, openai:<model>[:<dim>] or a tuned ft:e5-small:... id")
    reembed.add_argument("--force", action="store_true", help="use a tuned embedder even if its verdict was 'worse'")
    reembed.add_argument("--cancel", action="store_true", help="cancel the running reembed (new vectors dropped)")
    reembed.add_argument(
        "--no-wait", action="store_true", help="only start it; a running server (`serve`) carries it out"
    )
    sub.add_parser("status", help="print index status as JSON", description="Print index status as JSON.")
    sub.add_parser(
        "claude-config",
        help="print a Claude Desktop entry",
        description="Print a Claude Desktop mcpServers entry for this checkout (stdio).",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; settings come from RAGTUNE_* variables, flags override."""
    args = build_parser().parse_args(argv)
    settings = RetrievalSettings()
    configure_logging(settings.log_level)
    if args.command == "serve":
        try:
            return serve(settings, args.transport, args.host, args.port)
        except InsecureBindError as e:  # one line that says what to do, not a traceback (issue #12)
            print(f"error: {e}", file=sys.stderr)
            return 2
    if args.command == "claude-config":
        print(json.dumps(claude_config(settings), indent=2))
        return 0
    from ragtune.servers.retrieval import cli

    return cli.run(settings, args)


def serve(settings: RetrievalSettings, transport: str, host: str | None, port: int | None) -> int:
    """Serve over stdio (nothing but protocol on stdout) or streamable HTTP at /mcp."""
    if transport == "stdio":
        from ragtune.servers.retrieval.server import build_server

        build_server(settings).run("stdio")
        return 0
    import uvicorn

    host = host or settings.retrieval_host
    port = port or settings.retrieval_port
    check_bind(host, settings)
    settings = settings.model_copy(update={"retrieval_host": host, "retrieval_port": port})
    from ragtune.servers.retrieval.server import build_app

    uvicorn.run(build_app(settings, host=host), host=host, port=port, log_level=settings.log_level.lower())
    return 0


def claude_config(settings: RetrievalSettings) -> dict[str, object]:
    """Return a Claude Desktop `mcpServers` entry launching this Python over stdio."""
    env = {
        "RAGTUNE_HOME": str(settings.home.expanduser().resolve()),
        "RAGTUNE_RETRIEVAL_ROOTS": ":".join(str(r.expanduser().resolve()) for r in settings.retrieval_roots),
    }  # Desktop starts servers from an arbitrary folder
    return {
        "mcpServers": {
            "ragtune-retrieval": {
                "command": str(Path(sys.executable).absolute()),
                "args": ["-m", "ragtune.servers.retrieval", "serve", "--transport", "stdio"],
                "env": env,
            }
        }
    }


if __name__ == "__main__":
    sys.exit(main())
