"""Copy a retrieval index from one store to another (SQLite -> PostgreSQL) without re-embedding anything.

Collections keep their recorded embedder, documents their ids, content hashes and timestamps, chunks their spans
and analysed terms, and embedded chunks their vectors. A document the destination already holds with the same
content hash is skipped, so an interrupted copy resumes by running it again.
"""

from __future__ import annotations

from collections.abc import Callable

from ragtune.servers.retrieval.stores.base import RetrievalStore

Progress = Callable[[float, float | None, str], None]


class CopyConflict(RuntimeError):
    """Raised when the destination has a collection of the same name made with another embedder."""


def copy_index(src: RetrievalStore, dst: RetrievalStore, progress: Progress | None = None) -> dict[str, int]:
    """Copy every collection, document, chunk and vector of `src` into `dst`; return counts of what was done."""
    names = src.collection_names()
    total = sum(src.count_documents(n) for n in names)
    counts = {"collections": 0, "documents": 0, "unchanged": 0, "chunks": 0, "vectors": 0}
    done = 0
    for name in names:
        row = src.get_collection(name)
        if row is None:  # deleted while copying
            continue
        if not dst.create_collection(row):
            have = dst.get_collection(name)
            if have is not None and (have.embedder_model, have.dim) != (row.embedder_model, row.dim):
                raise CopyConflict(
                    f"collection {name!r} exists in {dst.location} with embedder {have.embedder_model} "
                    f"(dim {have.dim}), not {row.embedder_model} (dim {row.dim}): delete it there, or copy into "
                    "an empty database"
                )
        counts["collections"] += 1
        for doc, chunks in src.export_documents(name):
            outcome = dst.write_document(
                doc.doc_id,
                name,
                doc.source,
                doc.title,
                doc.content_hash,
                doc.text,
                doc.metadata,
                [c.chunk for c in chunks],
                [c.vector for c in chunks],
                now=doc.updated_at,
                created_at=doc.created_at,
            )
            done += 1
            if outcome == "unchanged":
                counts["unchanged"] += 1
            else:
                counts["documents"] += 1
                counts["chunks"] += len(chunks)
                counts["vectors"] += sum(c.vector is not None for c in chunks)
            if progress:
                progress(done, total, f"copied {done}/{total} documents ({name})")
    return counts
