"""Project conventions that no single component's tests see: settings vs .env.example, tool descriptions,
`--help` on every entry point, import rules, and registered, documented recipes."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from ragtune.config import ALL_SETTINGS
from ragtune.config_docs import collect

ROOT = Path(__file__).resolve().parents[1]
ENV_LINE = re.compile(r"^(#\s*)?(RAGTUNE_[A-Z0-9_]+)=(.*)$")
HEAVY = {"torch", "transformers", "trl", "peft"}


# ---- settings and .env.example ------------------------------------------------------------------------


def _env_example() -> dict[str, tuple[bool, str, str]]:
    """Map each variable in .env.example to (set?, value, the comment line above it)."""
    lines = (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
    found: dict[str, tuple[bool, str, str]] = {}
    for i, line in enumerate(lines):
        match = ENV_LINE.match(line)
        if match:
            comments = [prev for prev in lines[max(0, i - 3) : i] if prev.startswith("# ") and not ENV_LINE.match(prev)]
            found[match.group(2)] = (match.group(1) is None, match.group(3), " ".join(comments))
    return found


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    documented = set(_env_example())
    declared = {doc.env for doc in collect()}
    assert declared - documented == set(), "add these to .env.example (python -m ragtune.config_docs env)"
    assert documented - declared == set(), "these .env.example lines set nothing: remove them or add the setting"


def test_env_example_comments_and_defaults_match_the_settings() -> None:
    example = _env_example()
    for doc in collect():
        is_set, value, comment = example[doc.env]
        assert doc.description and doc.description in comment, f"{doc.env}: describe it above its line"
        if is_set:
            assert value == doc.default, f"{doc.env}={value} in .env.example, default is {doc.default}"
        else:
            assert doc.default is None, f"{doc.env} has a default ({doc.default}); write it uncommented"


def test_env_example_loads_into_every_settings_class_as_the_defaults(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text((ROOT / ".env.example").read_text(encoding="utf-8"), encoding="utf-8")
    for cls in ALL_SETTINGS:
        from_file, defaults = cls(_env_file=env_file), cls(_env_file=None)
        # RAGTUNE_HOME is isolated per test by the environment, which wins over the file either way.
        assert from_file.model_dump() == defaults.model_dump(), cls.__name__


# ---- MCP tools --------------------------------------------------------------------------------------


@pytest.mark.parametrize("server", ["retrieval", "finetune"])
async def test_every_mcp_tool_has_a_description_and_the_contract_name(server: str) -> None:
    import importlib

    from mcp import Client

    from ragtune.config import FinetuneSettings, RetrievalSettings

    module = importlib.import_module(f"ragtune.servers.{server}.server")
    settings = RetrievalSettings() if server == "retrieval" else FinetuneSettings()
    async with Client(module.build_server(settings)) as client:
        tools = (await client.list_tools()).tools
    contract = (ROOT / "docs/dev/CONTRACTS.md").read_text(encoding="utf-8")
    named = set(re.findall(rf"`({server}_[a-z_]+)`", contract))
    assert named <= {tool.name for tool in tools}, f"tools missing from {server}: {named - {t.name for t in tools}}"
    for tool in tools:
        assert tool.name.startswith(f"{server}_"), tool.name
        assert tool.description and len(tool.description.strip()) >= 20, f"{tool.name} needs a description"
        assert tool.input_schema.get("type") == "object", tool.name


# ---- --help on every entry point ----------------------------------------------------------------------


def _entry_points() -> list[list[str]]:
    modules = [
        "ragtune.servers.retrieval",
        "ragtune.servers.finetune",
        "ragtune.servers.worker",
        "ragtune.agents.research",
        "ragtune.agents.finetune",
        "ragtune.agents.coordinator",
        "ragtune.config_docs",
    ]
    scripts = [  # clients/_*.py are helpers, not scripts
        "agents/run.py",
        *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "clients").glob("*.py") if not p.name.startswith("_")),
        *sorted(
            str(p.relative_to(ROOT))
            for p in (ROOT / "bench").glob("*.py")
            if '__name__ == "__main__"' in p.read_text(encoding="utf-8")
        ),
    ]
    return [["-m", m] for m in modules] + [[s] for s in scripts]


def _help(args: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, *args, "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180
    )
    return args, result


def test_every_entry_point_has_help() -> None:
    entries = _entry_points()
    assert len(entries) >= 12, entries
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(_help, entries))
    failures = [
        f"{' '.join(a)}: rc={r.returncode} {r.stderr[-400:]}"
        for a, r in results
        if r.returncode != 0 or "usage" not in r.stdout.lower()
    ]
    assert not failures, "\n".join(failures)


# ---- import rules -------------------------------------------------------------------------------------


def _python_files(*folders: str) -> list[Path]:
    return [p for folder in folders for p in sorted((ROOT / folder).rglob("*.py"))]


def _imports(path: Path, top_level_only: bool) -> set[str]:
    """Return the top-level package names `path` imports (module level only, or anywhere)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    if top_level_only:
        nodes: list[ast.AST] = []
        stack: list[ast.AST] = list(tree.body)
        while stack:  # module body, including `if`/`try` blocks at module level, but not function bodies
            node = stack.pop()
            nodes.append(node)
            if isinstance(node, ast.If | ast.Try | ast.With):
                if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                    continue
                stack.extend(ast.iter_child_nodes(node))
    else:
        nodes = list(ast.walk(tree))
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names |= {_component(alias.name) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(_component(node.module))
    return names


def _component(module: str) -> str:
    """The component a module belongs to: `ragtune.servers.x` -> servers, `ragtune.config` -> ragtune."""
    parts = module.split(".")
    if parts[0] == "ragtune" and len(parts) > 1 and parts[1] in {"servers", "agents", "clients"}:
        return parts[1]
    return parts[0]


@pytest.mark.parametrize(
    ("folder", "forbidden"),
    [
        ("ragtune", {"servers", "agents", "clients"}),
        ("servers", {"agents", "clients"}),
        ("agents", {"servers", "clients"}),
        ("clients", {"ragtune", "servers", "agents"}),
    ],
)
def test_import_rules(folder: str, forbidden: set[str]) -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(_imports(p, False) & forbidden) for p in _python_files(folder)}
    assert not {k: v for k, v in offenders.items() if v}


def _module_files() -> dict[str, Path]:
    """Map every installed module name (ragtune.servers.retrieval.index, ...) to its file."""
    prefixes = {"ragtune": "ragtune", "servers": "ragtune.servers", "agents": "ragtune.agents"}
    out = {}
    for folder, prefix in prefixes.items():
        for path in _python_files(folder):
            parts = [p for p in path.relative_to(ROOT / folder).with_suffix("").parts if p != "__init__"]
            out[".".join([prefix, *parts])] = path
    return out


def _internal_imports(path: Path, modules: set[str]) -> set[str]:
    """Return the project modules `path` imports anywhere (function bodies too), TYPE_CHECKING blocks aside."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    typing_only = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for n in ast.walk(stmt)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names & modules


def test_no_module_imports_itself_back_through_another() -> None:
    files = _module_files()
    graph = {name: _internal_imports(path, set(files)) - {name} for name, path in files.items()}

    def reaches(start: str, goal: str) -> list[str] | None:
        seen, todo = {start}, [[start]]
        while todo:
            trail = todo.pop()
            for nxt in sorted(graph[trail[-1]]):
                if nxt == goal:
                    return [*trail, nxt]
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append([*trail, nxt])
        return None

    circles = {" -> ".join(c) for m in graph for d in graph[m] if (c := reaches(d, m)) is not None}
    assert not circles, f"import circles (pass the lower module what it needs instead): {sorted(circles)}"


def test_gpu_libraries_are_imported_at_module_level_only_in_recipes() -> None:
    allowed = ("servers/worker/recipes/", "ragtune/embedders/")
    offenders = {}
    for path in _python_files("ragtune", "servers", "agents", "clients"):
        rel = str(path.relative_to(ROOT))
        heavy = _imports(path, True) & HEAVY
        if heavy and not rel.startswith(allowed):
            offenders[rel] = sorted(heavy)
    assert not offenders, f"import these inside the function that needs them: {offenders}"


def test_light_modules_do_not_load_gpu_libraries_at_import() -> None:
    """Importing the servers, agents and core must not pull torch in (a torch-backed engine loads lazily)."""
    modules = [
        "ragtune.config",
        "ragtune.db",
        "ragtune.jobs",
        "ragtune.datasets",
        "ragtune.embeddings",
        "ragtune.llm",
        "ragtune.servers.retrieval.server",
        "ragtune.servers.finetune.server",
        "ragtune.servers.worker.worker",
        "ragtune.servers.worker.recipes",
        "ragtune.agents.research.graph",
        "ragtune.agents.finetune.graph",
    ]
    code = (
        f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
        f"print(sorted({HEAVY!r} & set(sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]", f"loaded at import: {result.stdout}"


# ---- recipes ------------------------------------------------------------------------------------------


def test_every_recipe_module_is_registered_and_documented() -> None:
    from ragtune.servers.worker.recipes import RECIPES

    support = {"__init__", "base", "common", "plot", "rewards", "evaluate", "eval_report", "metrics"}
    support |= {"embedding_corpus", "embedding_eval", "embedding_model", "embedding_pairs"}  # the embedding recipe's
    modules = {p.stem for p in (ROOT / "servers/worker/recipes").glob("*.py")} - support
    registered = {recipe.run.__module__.rsplit(".", 1)[-1] for recipe in RECIPES.values()}
    assert modules == registered, f"recipe modules {modules} vs registered {registered}"
    docs = (ROOT / "README.md").read_text(encoding="utf-8") + (ROOT / "docs/guide/overview.md").read_text(
        encoding="utf-8"
    )
    for name, recipe in RECIPES.items():
        assert recipe.description, name
        assert f"`{name}`" in docs, f"document recipe {name} in README.md and docs/guide/overview.md"
