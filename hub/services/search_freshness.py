"""When must the search indexes re-check the catalog? Cheaply, on a server's hot path.

Comparing the catalog's fingerprint (``Catalog.versions_fingerprint``) is one small query, but
per request it still dominates a cached search. So a search first asks :class:`CatalogWatch`:

- after a write through this process's catalog object (``catalog.writes`` moved), check now:
  an adapter added or deleted through this server is reflected by the very next search;
- otherwise check at most every ``interval_s``: writes by other processes (the CLI, Ray job
  workers, another server) show up within that bound.

The sync itself (``SearchService.sync``) then compares the fingerprint and does work only when
it moved.
"""

from __future__ import annotations

import time
from typing import Any


class CatalogWatch:
    def __init__(self, catalog: Any, interval_s: float) -> None:
        self.catalog = catalog
        self.interval_s = max(float(interval_s), 0.0)
        self._seen_writes = -1
        self._checked_at = float("-inf")

    def due(self) -> bool:
        """A check is needed (cheap to call: no I/O)."""
        return (
            self.catalog.writes != self._seen_writes
            or time.monotonic() - self._checked_at >= self.interval_s
        )

    def checked(self) -> None:
        """The caller checks now. Recorded *before* its check, so a write landing during it
        moves ``catalog.writes`` again and makes the next call due."""
        self._seen_writes = self.catalog.writes
        self._checked_at = time.monotonic()
