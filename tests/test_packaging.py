"""Packaging: one import package, every sub-package listed, every import declared, a wheel that installs and runs."""

from __future__ import annotations

import ast
import json
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

from ragtune import paths

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# Repository folder -> the import package it installs as (pyproject's [tool.setuptools.package-dir]).
INSTALLED_AS = {"ragtune": "ragtune", "servers": "ragtune.servers", "agents": "ragtune.agents"}
# Import names whose module ships in a helper distribution: the distribution a user installs to get it.
IMPORT_TO_DIST = {"fastmcp": "fastmcp", "google": "protobuf"}
SOURCES = ("ragtune", "servers", "agents", "clients")
# Packages of data only (no __init__.py): the user guides, shipped under ragtune/guides in the repository's layout.
DATA_PACKAGES = {"ragtune.guides"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    """Return every distribution pyproject declares, in the core list or an extra."""
    reqs = [*PYPROJECT["project"]["dependencies"], *sum(PYPROJECT["project"]["optional-dependencies"].values(), [])]
    return {_norm(re.split(r"[\[<>=!~;, ]", r, maxsplit=1)[0]) for r in reqs}


def _third_party_imports() -> dict[str, str]:
    """Return each third-party top-level name imported anywhere in the shipped code and clients, with one file."""
    found: dict[str, str] = {}
    for folder in SOURCES:
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    local = (path.parent / f"{top}.py").exists()  # clients/ import their sibling helpers
                    if top not in sys.stdlib_module_names and top not in {"ragtune", "__future__"} and not local:
                        found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_package_folder_is_listed_in_pyproject() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"]) - DATA_PACKAGES
    folders = {
        ".".join([INSTALLED_AS[folder], *init.parent.relative_to(ROOT / folder).parts])
        for folder in INSTALLED_AS
        for init in (ROOT / folder).rglob("__init__.py")
    }
    assert folders - listed == set(), "add these to [tool.setuptools] packages in pyproject.toml"
    assert listed - folders == set(), "these listed packages have no folder with an __init__.py"


def test_every_imported_distribution_is_declared() -> None:
    dists = packages_distributions()
    declared = _declared()
    missing = {}
    for name, where in _third_party_imports().items():
        # An optional dependency this venv lacks (ray, say) has no installed distribution: try the import name.
        candidates = [IMPORT_TO_DIST[name]] if name in IMPORT_TO_DIST else dists.get(name, [name])
        if not any(_norm(d) in declared for d in candidates):
            missing[name] = f"{'/'.join(candidates)} (imported by {where})"
    assert not missing, f"declare these in pyproject.toml (core or an extra): {missing}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Build the wheel from a copy of the sources (setuptools writes build/ and *.egg-info next to them)."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    for folder in (*INSTALLED_AS, "docs/guide", "docs/ko"):
        shutil.copytree(ROOT / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__"))
    build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(base), str(src)]
    done = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return next(base.glob("ragtune-*.whl"))


def test_the_wheel_installs_one_import_package_and_the_console_scripts(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert {n.split("/")[0] for n in names} == {"ragtune", wheel.name.split("-py3")[0] + ".dist-info"}
    assert "ragtune/servers/retrieval/index.py" in names and "ragtune/agents/demo.py" in names
    scripts = dict(re.findall(r"^(ragtune-[\w-]+) = (\S+)$", entry_points, re.MULTILINE))
    assert scripts == PYPROJECT["project"]["scripts"]
    # The guides and nothing else from the repository root that "ragtune.guides" maps.
    shipped = {n.removeprefix("ragtune/guides/") for n in names if n.startswith("ragtune/guides/")}
    assert shipped == {p.relative_to(ROOT).as_posix() for p in _guide_files(ROOT)}


def _guide_files(root: Path) -> list[Path]:
    """Return every file of the user guides under a guides root (a checkout, or an installed package's copy)."""
    return [f for p in paths.GUIDE_NAMES for f in ([root / p] if p.endswith(".md") else (root / p).glob("*.md"))]


def test_in_a_checkout_the_guides_are_the_repository_files() -> None:
    assert paths.checkout() == ROOT and paths.guides_root() == ROOT
    assert paths.guides() == (ROOT / "docs/guide", ROOT / "docs/ko", ROOT / "README.md")


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Install the wheel into a fresh venv outside the repository; return the venv."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # The dependencies come from the project venv (no downloads); ragtune itself only from the wheel, because a
    # path line in a .pth file does not run the editable install's import hook that lives in that venv.
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    (Path(purelib) / "project_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "--no-index"]
    subprocess.run([*pip, str(wheel)], check=True, timeout=300)
    return venv


def _run(venv: Path, cwd: Path, env: dict[str, str], script: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run one of the venv's programs in `cwd` (outside the repository) with only `env` and a bare PATH."""
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([venv / "bin" / script, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=300)


@pytest.mark.slow
def test_the_wheel_runs_from_a_fresh_venv(venv: Path, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "cats.md").write_text("# Cats\n\nCats purr when they are content.\n")
    env = {"RAGTUNE_HOME": str(tmp_path / "home"), "RAGTUNE_EMBEDDER": "none", "RAGTUNE_RETRIEVAL_ROOTS": str(docs)}

    where = _run(venv, tmp_path, env, "python", "-c", "import ragtune.servers.retrieval.index as m; print(m.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    for script in ("ragtune-retrieval", "ragtune-agents", "ragtune-finetune", "ragtune-worker"):
        shown = _run(venv, tmp_path, env, script, "--help")
        assert shown.returncode == 0 and shown.stdout.startswith("usage:"), f"{script}: {shown.stderr[-2000:]}"
    assert _run(venv, tmp_path, env, "ragtune-retrieval", "ingest", str(docs)).returncode == 0
    found = _run(venv, tmp_path, env, "ragtune-retrieval", "search", "purr", "--json")
    assert found.returncode == 0, found.stderr[-2000:]
    assert [h["source"] for h in json.loads(found.stdout)["hits"]] == ["cats.md"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_installed_demo_answers_from_the_shipped_guides(venv: Path, tmp_path: Path) -> None:
    """The demo's whole path from the wheel: six services, ingest of the shipped guides, a cited answer (~70 s)."""
    home = tmp_path / "home"
    names = ("RETRIEVAL", "FINETUNE", "COORDINATOR", "RESEARCH", "FINETUNE_AGENT")
    env = {"RAGTUNE_HOME": str(home), "COLUMNS": "200"} | {f"RAGTUNE_{n}_PORT": str(_free_port()) for n in names}
    asked = _run(venv, tmp_path, env, "ragtune-agents", "--ask", "What port does the fine-tuning server listen on?")
    assert asked.returncode == 0, asked.stdout[-3000:] + asked.stderr[-3000:]
    assert "8702" in asked.stdout and "Sources:" in asked.stdout and "[1] " in asked.stdout, asked.stdout[-3000:]

    with sqlite3.connect(home / "retrieval.db") as db:
        rows = db.execute("SELECT source, json_extract(metadata, '$.path') FROM documents WHERE collection = 'guides'")
        indexed = dict(rows.fetchall())
    shipped = next((venv / "lib").glob("python3*/site-packages/ragtune/guides"))
    assert indexed == {p.relative_to(shipped).as_posix(): str(p) for p in _guide_files(shipped)}
