"""Bounded disk for dedupe entries: walk each partition's entries a little per batch, delete the expired."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from app import ledger


class Sweep:
    """A cursor per partition over the entry keys of that partition's RocksDB.

    Faust writes a table only from its agent and into the partition of the event
    at hand, so the agent calls `step` with each batch. Each step reads at most
    `budget` entries from where the last stopped and wraps at the end: with a
    budget above the batch's event count the cursor goes round faster than
    entries are added, so an entry outlives its window by at most one round.
    """

    def __init__(self) -> None:
        self._cursors: dict[int, bytes] = {}

    def step(self, partition: int, db: Any, *, budget: int, now: datetime, dedupe_window_s: int) -> list[bytes]:
        """Keys of expired entries among the next `budget` (db: the partition's rocksdict Rdict)."""
        start = self._cursors.get(partition, ledger.ENTRY_PREFIX)
        it = db.iter()
        it.seek(start)
        seen: list[tuple[bytes, bytes]] = []
        while it.valid() and len(seen) < budget:
            key = it.key()
            if not key.startswith(ledger.ENTRY_PREFIX):
                break
            seen.append((key, it.value()))
            it.next()
        # Past the last entry: start the next round from the first one.
        self._cursors[partition] = (
            it.key() if it.valid() and it.key().startswith(ledger.ENTRY_PREFIX) else ledger.ENTRY_PREFIX
        )
        return ledger.expired(seen, now=now, dedupe_window_s=dedupe_window_s)
