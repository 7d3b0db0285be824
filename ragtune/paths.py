"""Where the kit's own files are: the installed package and the user guides the demo ingests.

A wheel ships the guides as package data under `ragtune/guides/` in the repository's layout (`docs/guide`,
`docs/ko`, `README.md`; pyproject's `[tool.setuptools.package-data]`), so the same relative names work in both
cases; in a checkout (the editable install) they are the repository's own files, docs/ stays the only source.
"""

from __future__ import annotations

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
GUIDE_NAMES = ("docs/guide", "docs/ko", "README.md")  # relative to guides_root(), in a checkout and in a wheel


def checkout() -> Path | None:
    """Return the repository root when ragtune runs from a source checkout, None when it is installed from a wheel."""
    root = PACKAGE.parent
    return root if (root / "pyproject.toml").is_file() and (root / "docs" / "guide").is_dir() else None


def guides_root() -> Path:
    """Return the folder the guide names resolve against: the checkout, or the copy shipped in the package."""
    return checkout() or PACKAGE / "guides"


def guides() -> tuple[Path, ...]:
    """Return the user guides (English, Korean, the README): the demo's default corpus and fine-tuning source."""
    return tuple(guides_root() / name for name in GUIDE_NAMES)


def default_roots() -> str:
    """Return the demo's default allowed roots (RAGTUNE_*_ROOTS syntax): the guides' folder and the caller's cwd."""
    return ",".join(dict.fromkeys(str(p) for p in (guides_root(), Path.cwd().resolve())))
