"""What the demo ingests and where: the user guides in their own collection, or `--docs DIR` in a collection of its own.

Developer and benchmark notes (docs/dev, docs/benchmarks) are not user documentation; ingesting them put internal
text into user answers (issue #9), so the demo corpus is the guides and the README only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ragtune.paths import GUIDE_NAMES as GUIDES
from ragtune.paths import default_roots, guides_root

ROOT = guides_root()  # the checkout, or the guides shipped in the installed package
GUIDES_COLLECTION = "guides"


class CorpusError(ValueError):
    """Raised when the folder or collection asked for cannot be used."""


@dataclass(frozen=True)
class Corpus:
    """The paths to ingest and the collection the agents search."""

    paths: tuple[Path, ...]
    collection: str

    def label(self) -> str:
        """Return a short description for progress lines."""
        names = [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in self.paths]
        return f"{', '.join(names)} → {self.collection}"


def collection_for(folder: Path) -> str:
    """Return the collection a user folder goes into: `docs-<folder name>`, never the shared `default`."""
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "-", folder.name).strip("-.") or "folder"
    return f"docs-{slug}"[:64]


def choose_corpus(docs: str | None, collection: str | None = None) -> Corpus:
    """Return the user guides (no --docs) or the given folder, each in its own collection (or the one named)."""
    if collection is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}", collection):
        raise CorpusError(f"--collection {collection!r}: use 1-64 letters, digits, '_', '.', '-'")
    if docs is None:
        return Corpus(tuple(ROOT / p for p in GUIDES), collection or GUIDES_COLLECTION)
    folder = Path(docs).expanduser().resolve()
    if not folder.exists():
        raise CorpusError(f"--docs {docs}: no such file or folder; give the folder of documents to ingest")
    return Corpus((folder,), collection or collection_for(folder))


def retrieval_roots(corpus: Corpus, configured: str | None) -> str:
    """Return RAGTUNE_RETRIEVAL_ROOTS for the demo: the configured roots (default guides + cwd) plus the corpus."""
    roots = [r for r in re.split(r"[:,]", configured or default_roots()) if r]
    extra = [str(p) for p in corpus.paths if not any(p.is_relative_to(Path(r).resolve()) for r in roots)]
    return ",".join(roots + extra)
