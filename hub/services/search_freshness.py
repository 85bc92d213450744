"""When must the search indexes re-sync with the catalog? Cheaply, on a server's hot path.

A full sync lists every version id and diffs it against the indexes; doing that per request
dominated the cost of a search. Instead a search first asks :class:`CatalogWatch`:

- after a write through this process's catalog object (``catalog.writes`` moved), check now:
  an adapter added or deleted through this server is reflected by the very next search;
- otherwise check at most every ``interval_s``: writes by other processes (the CLI, Ray job
  workers, another server) show up within that bound;
- a check is one aggregate query (``Catalog.versions_fingerprint``); only when the fingerprint
  moved does the full sync run and the per-generation caches (allowed-id sets, result items)
  get dropped.
"""

from __future__ import annotations

import time
from typing import Any


class CatalogWatch:
    def __init__(self, catalog: Any, interval_s: float) -> None:
        self.catalog = catalog
        self.interval_s = max(float(interval_s), 0.0)
        self._fingerprint: Any = None
        self._seen_writes = -1
        self._checked_at = float("-inf")

    def due(self) -> bool:
        """A check is needed (cheap to call: no I/O)."""
        return (
            self.catalog.writes != self._seen_writes
            or time.monotonic() - self._checked_at >= self.interval_s
        )

    def moved(self) -> bool:
        """Read the fingerprint; True when it differs from the last one seen (or none yet).

        The fingerprint is read *before* the caller syncs, so a write landing during the sync
        leaves the stored fingerprint behind and is picked up by the next check."""
        writes = self.catalog.writes
        fingerprint = self.catalog.versions_fingerprint()
        changed = fingerprint != self._fingerprint
        self._fingerprint, self._seen_writes = fingerprint, writes
        self._checked_at = time.monotonic()
        return changed

    def forget(self) -> None:
        """Make the next check report a change (after an explicit sync or a rebuild)."""
        self._fingerprint = None
