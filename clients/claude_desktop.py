#!/usr/bin/env python
"""Add ragtune's two MCP servers to Claude Desktop's config (stdio, this project's Python), keeping the rest.

    python clients/claude_desktop.py --print            # show the merged config, change nothing
    python clients/claude_desktop.py                    # back the file up, then write the merged config
    python clients/claude_desktop.py --verify           # also start each entry over stdio and list its tools

Exits non-zero when the written file does not hold both entries and every server that was there before,
or when --verify finds a server that does not start or lacks its tools.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SERVERS = {"ragtune-retrieval": "ragtune.servers.retrieval", "ragtune-finetune": "ragtune.servers.finetune"}
EXPECTED_TOOL = {"ragtune-retrieval": "retrieval_search", "ragtune-finetune": "finetune_create_job"}


def default_config_path() -> Path:
    """Return where Claude Desktop reads its config on this platform."""
    if sys.platform == "darwin":
        return Path.home() / "Library/Application Support/Claude/claude_desktop_config.json"
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData/Roaming")) / "Claude/claude_desktop_config.json"
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "Claude/claude_desktop_config.json"


def project_python() -> Path:
    """Return the absolute path of the project's Python (the .venv one when it exists)."""
    venv = ROOT / ".venv" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")
    return venv if venv.exists() else Path(sys.executable).absolute()


def entries(python: Path, home: Path, roots: list[Path]) -> dict[str, dict[str, Any]]:
    """Return the mcpServers entries that start each ragtune server over stdio."""
    joined = os.pathsep.join(str(r.expanduser().resolve()) for r in roots)
    env = {
        "RAGTUNE_HOME": str(home.expanduser().resolve()),
        "PYTHONPATH": str(ROOT),
        "HF_HUB_OFFLINE": "1",
        "RAGTUNE_RETRIEVAL_ROOTS": joined,
        "RAGTUNE_FINETUNE_ROOTS": joined,
    }
    return {
        name: {
            "command": str(python),
            "args": ["-m", module, "serve", "--transport", "stdio"],
            "env": dict(env),
        }
        for name, module in SERVERS.items()
    }


def load_config(path: Path) -> dict[str, Any]:
    """Read an existing config, refusing (rather than overwriting) one that is not a JSON object."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as exc:
        raise SystemExit(f"{path} is not valid JSON ({exc}); fix or move it, then run again") from None
    if not isinstance(data, dict) or not isinstance(data.get("mcpServers", {}), dict):
        raise SystemExit(f"{path} does not hold a JSON object with an 'mcpServers' object; fix or move it")
    return data


def merge(config: dict[str, Any], new: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Return the config with ragtune's entries set and everything else untouched."""
    merged = dict(config)
    merged["mcpServers"] = {**config.get("mcpServers", {}), **new}
    return merged


def write_config(path: Path, config: dict[str, Any]) -> Path | None:
    """Back up the old file, then replace it atomically; return the backup's path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    if path.exists():
        backup = path.with_name(path.name + ".bak")
        shutil.copy2(path, backup)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, delete=False, suffix=".tmp") as tmp:
        json.dump(config, tmp, indent=2, ensure_ascii=False)
        tmp.write("\n")
    Path(tmp.name).replace(path)
    return backup


async def verify(new: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    """Start each entry exactly as Claude Desktop would and return the tools it lists."""
    from mcp import Client, StdioServerParameters

    found: dict[str, list[str]] = {}
    for name, entry in new.items():
        params = StdioServerParameters(command=entry["command"], args=entry["args"], env=entry["env"], cwd=str(ROOT))
        try:
            async with Client(params, read_timeout_seconds=120) as client:
                found[name] = sorted(tool.name for tool in (await client.list_tools()).tools)
        except Exception as exc:  # the SDK raises an exception group when the child dies; name the server
            raise AssertionError(
                f"{name} did not start over stdio ({entry['command']} {' '.join(entry['args'])}): "
                f"{exc!r}; run that command in a terminal to see its error"
            ) from None
    return found


async def main(argv: list[str] | None = None) -> int:
    """Merge (or print) the entries, then check that the result holds what it claims."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=default_config_path(), help="config file to merge into")
    parser.add_argument("--print", dest="print_only", action="store_true", help="only print the merged config")
    parser.add_argument("--python", type=Path, default=project_python(), help="Python that runs the servers")
    parser.add_argument("--home", type=Path, default=ROOT / ".ragtune", help="RAGTUNE_HOME for both servers")
    parser.add_argument(
        "--root",
        dest="roots",
        type=Path,
        action="append",
        help="folder the servers may read files from (repeatable; default: your home folder)",
    )
    parser.add_argument("--verify", action="store_true", help="start each server over stdio and list its tools")
    args = parser.parse_args(argv)

    before = load_config(args.config)
    new = entries(args.python.absolute(), args.home, args.roots or [Path.home()])
    merged = merge(before, new)
    if args.print_only:
        print(json.dumps(merged, indent=2, ensure_ascii=False))
    else:
        backup = write_config(args.config, merged)
        print(f"wrote {args.config}" + (f" (previous version saved as {backup})" if backup else ""))
        after = load_config(args.config)
        kept = set(before.get("mcpServers", {})) - set(new)
        assert after == merged, "the file on disk differs from what was written"
        assert kept <= set(after["mcpServers"]), f"lost entries: {kept - set(after['mcpServers'])}"
        print(f"entries: {', '.join(new)}; kept: {', '.join(sorted(kept)) or 'none'}. Restart Claude Desktop fully.")
    if args.verify:
        tools = await verify(new)
        for name, listed in tools.items():
            assert EXPECTED_TOOL[name] in listed, f"{name} started but lacks {EXPECTED_TOOL[name]}: {listed}"
            print(f"{name}: {len(listed)} tools ({', '.join(listed)})")
    return 0


if __name__ == "__main__":
    from _errors import run  # clients/ is on sys.path when a client runs as a script

    run(main, "check that the servers start: `python -m ragtune.servers.retrieval serve`")
