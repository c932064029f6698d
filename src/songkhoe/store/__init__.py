"""The FHIR R4 record store (SQLite embedded, PostgreSQL in production). See ``api.py``."""

from __future__ import annotations

from .api import HistoryPage, SearchResult, Stored, WriteResult
from .backends import open_backend
from .engine import Store, Tx


def open_store(url: str | None = None) -> Store:
    """Open (creating or migrating) the store at ``url``; None = the embedded default file."""
    return Store(open_backend(url))


__all__ = ["HistoryPage", "SearchResult", "Store", "Stored", "Tx", "WriteResult", "open_store"]
