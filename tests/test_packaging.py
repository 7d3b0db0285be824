"""Packaging: one import package, every sub-package listed, every import declared, a wheel that installs and runs."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# Repository folder -> the import package it installs as (pyproject's [tool.setuptools.package-dir]).
INSTALLED_AS = {"ragtune": "ragtune", "servers": "ragtune.servers", "agents": "ragtune.agents"}
# Import names whose module ships in a helper distribution: the distribution a user installs to get it.
IMPORT_TO_DIST = {"fastmcp": "fastmcp", "google": "protobuf"}
SOURCES = ("ragtune", "servers", "agents", "clients")


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
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
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
    for folder in INSTALLED_AS:
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


@pytest.mark.slow
def test_the_wheel_runs_from_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
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

    docs, home = tmp_path / "docs", tmp_path / "home"
    docs.mkdir()
    (docs / "cats.md").write_text("# Cats\n\nCats purr when they are content.\n")
    env = {"PATH": "/usr/bin:/bin", "RAGTUNE_HOME": str(home), "RAGTUNE_EMBEDDER": "none"}
    env |= {"RAGTUNE_RETRIEVAL_ROOTS": str(docs), "HF_HUB_OFFLINE": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)

    where = run(str(python), "-c", "import ragtune.servers.retrieval.index as m; print(m.__file__)")
    assert where.stdout.startswith(str(venv)), where.stdout + where.stderr
    for script in ("ragtune-retrieval", "ragtune-agents", "ragtune-finetune", "ragtune-worker"):
        shown = run(str(venv / "bin" / script), "--help")
        assert shown.returncode == 0 and shown.stdout.startswith("usage:"), f"{script}: {shown.stderr[-2000:]}"
    assert run(str(venv / "bin" / "ragtune-retrieval"), "ingest", str(docs)).returncode == 0
    found = run(str(venv / "bin" / "ragtune-retrieval"), "search", "purr", "--json")
    assert found.returncode == 0, found.stderr[-2000:]
    assert [h["source"] for h in json.loads(found.stdout)["hits"]] == ["cats.md"]
