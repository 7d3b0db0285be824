"""Errors the retrieval index raises for bad input; each message tells the caller what to do next."""

from __future__ import annotations


class RetrievalError(Exception):
    """Base of every error a user or model can fix by changing the request."""


class UnknownCollection(RetrievalError):
    """Raised when a collection does not exist."""


class CollectionExists(RetrievalError):
    """Raised when creating a collection that already exists."""


class UnknownDocument(RetrievalError):
    """Raised when a document id does not exist."""


class EmbedderMismatch(RetrievalError):
    """Raised when a collection's recorded embedder differs from the one in use (vectors would be garbage)."""


class BadQuery(RetrievalError):
    """Raised for an empty query or impossible search arguments."""


class IngestError(RetrievalError):
    """Raised when a path or document cannot be ingested: outside the roots, too big, empty, unsupported."""


class ReembedError(RetrievalError):
    """Raised when a collection cannot be re-embedded as asked (unknown or worse embedder, another run going)."""


class UnusableEmbedder(RetrievalError):
    """Raised when an embedder id is unknown, cannot be loaded here, or is a tuned one that scored worse."""
