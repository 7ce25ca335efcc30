"""The user records the worker wrote last, kept parsed so that the next batch need not read them again."""

from __future__ import annotations

from collections.abc import Iterable

from app.ledger import UserRecord


class RecentUsers:
    """User records by table key, exactly as this worker last wrote them to RocksDB.

    Reading and parsing a user's record was a twelfth of the worker's time, and an active
    user comes back batch after batch. Only this worker writes its partitions' RocksDB while
    it holds them; a rebalance can hand a partition to another worker and back, and recovery
    then rewrites RocksDB from the changelog, so everything is forgotten when the consumer
    generation changes. The oldest half goes when `capacity` is passed.
    """

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._records: dict[bytes, UserRecord] = {}
        self._generation: int | None = None

    def of(self, generation: int | None) -> dict[bytes, UserRecord]:
        """The records to trust while applying records of this consumer generation."""
        if generation != self._generation:
            self._records = {}
            self._generation = generation
        return self._records

    def keep(self, written: Iterable[tuple[bytes, UserRecord]]) -> None:
        """Remember records just written to RocksDB (not before: a failed write must not be remembered)."""
        if self._capacity <= 0:
            return
        records = self._records
        for key, user in written:
            records.pop(key, None)  # to the back: the oldest go first
            records[key] = user
        if len(records) > self._capacity:
            # In one go: deleting from the front of a dict one key at a time makes every later
            # scan for the front walk over the holes.
            self._records = dict(list(records.items())[len(records) - self._capacity // 2 :])
