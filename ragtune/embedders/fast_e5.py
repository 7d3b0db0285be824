"""Pick the fastest available engine for multilingual-e5-small."""

from __future__ import annotations

from ragtune.embedders.packaged_e5 import PackagedE5


def fast_e5_or_packaged(threads: int = 1, batch_size: int = 16) -> PackagedE5:
    """Return the e5-small engine (the packaged C engine until a faster one is proven equal in quality)."""
    return PackagedE5(threads=threads, batch_size=batch_size)
