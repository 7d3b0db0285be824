"""Where the server that fills vectors says it is alive, so `status` from any shell tells the truth.

SQLite: a sidecar file beside the index, not a row in it (a write to the file would invalidate the in-memory
vector caches). PostgreSQL: a row of the `fillers` table (replicas run on several machines; the row is outside
the generation counters, so no cache is invalidated). `target` is the index file, or the store (Index.beat_target).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)
Target = Path | Any  # the SQLite index file, or a store with beat / clear_beat / read_beat (PostgreSQL)

STALE_SECONDS = 90.0  # three idle periods of the filler without a beat: it is gone


def beat_path(db_path: Path) -> Path:
    """Return the heartbeat file of the index at `db_path`."""
    return db_path.with_name(db_path.name + ".filler.json")


def beat(db_path: Target, *, embedding: bool, pending: int) -> None:
    """Record that this process is filling vectors (or idle, waiting for work); replaced atomically."""
    if not isinstance(db_path, Path):
        db_path.beat(socket.gethostname(), os.getpid(), embedding=embedding, pending=pending)
        return
    state = {"pid": os.getpid(), "host": socket.gethostname(), "at": time.time(), "embedding": embedding}
    state["pending"] = pending
    tmp = beat_path(db_path).with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state), encoding="utf-8")
    os.replace(tmp, beat_path(db_path))


def clear(db_path: Target) -> None:
    """Remove this process's heartbeat (another process's stays)."""
    if not isinstance(db_path, Path):
        try:
            db_path.clear_beat(socket.gethostname(), os.getpid())
        except Exception:  # shutting down with the database gone: the row goes stale on its own
            log.debug("could not remove the filler heartbeat row", exc_info=True)
        return
    state = read(db_path)
    if state is not None and state.get("pid") == os.getpid():
        beat_path(db_path).unlink(missing_ok=True)


def read(db_path: Target) -> dict[str, Any] | None:
    """Return a live filler's last beat, or None when none is fresh (or its process is gone)."""
    try:
        if isinstance(db_path, Path):
            state = json.loads(beat_path(db_path).read_text(encoding="utf-8"))
        else:
            state = db_path.read_beat(STALE_SECONDS)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or time.time() - float(state.get("at", 0)) > STALE_SECONDS:
        return None
    if state.get("host") == socket.gethostname() and not _alive(int(state.get("pid", 0))):
        return None
    return state


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return pid > 0


def describe(state: dict[str, Any] | None, has_embedder: bool) -> str:
    """Say in one sentence who fills missing vectors, for `status`."""
    if not has_embedder:
        return "no embedder is configured (RAGTUNE_EMBEDDER=none): search is lexical only"
    if state is None:
        return "no running server is filling vectors: they fill while `serve` runs, or run `ingest` without --no-wait"
    doing = "embedding now" if state.get("embedding") else "idle, waiting for new chunks"
    age = time.time() - float(state["at"])
    return f"server pid {state['pid']} on {state['host']} fills vectors ({doing}; last heartbeat {age:.0f} s ago)"
