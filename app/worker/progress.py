"""Which source records the worker applies, strictly in offset order, and the offsets it may commit."""

from __future__ import annotations

import enum
from collections.abc import Mapping

Partition = tuple[str, int]  # (topic, partition)


class Admission(enum.Enum):
    NEXT = "next"  # the record the partition waits for: apply it
    OLD = "old"  # applied before (a seek went back past it): drop it
    GAP = "gap"  # a record before it never came: drop it, seek back to the position


class Progress:
    """Per source partition, the next offset to apply; every record before it has been applied.

    faust-streaming drops records its stream receives while flow control is paused around a
    rebalance or recovery, and nothing fetches them again (a hundred records of a partition can
    go between two batches). Applying what comes after such a hole would reorder a
    user's events, and committing past it would lose them, so the worker applies only the next
    offset, drops the rest and seeks back to the hole. Offsets can also hold no record at all (a
    transactional producer's markers, records compacted away): when the broker shows the first
    record after the position is further on, the Intake `skip`s to it (app/worker/probe.py).
    """

    def __init__(self, *, seek_every_s: float = 1.0) -> None:
        self._next: dict[Partition, int] = {}
        self._beyond: dict[Partition, int] = {}  # the furthest record seen past a hole
        self._sought: dict[Partition, tuple[int, float]] = {}  # (position, when) of the last seek
        self._still: dict[Partition, tuple[int, float]] = {}  # (position, since when) for `stuck`
        self.seek_every_s = seek_every_s

    def knows(self, partition: Partition) -> bool:
        return partition in self._next

    def start(self, partition: Partition, offset: int) -> None:
        """Begin at `offset`: the group's committed offset, or the log's start when records expired."""
        self._next[partition] = offset
        self._beyond.pop(partition, None)
        self._sought.pop(partition, None)

    def admit(self, partition: Partition, offset: int) -> Admission:
        position = self._next[partition]
        if offset < position:
            return Admission.OLD
        if offset > position:
            self._beyond[partition] = max(offset, self._beyond.get(partition, offset))
            return Admission.GAP
        self._advance(partition, offset + 1)
        return Admission.NEXT

    def admit_run(self, partition: Partition, first: int, count: int) -> bool:
        """Admit the `count` records from offset `first` on, which hold every offset in between,
        if they are all NEXT (the run starts at the position); else admit nothing and say False,
        and each record is admitted on its own. What `admit` of each would do, at once."""
        if self._next[partition] != first:
            return False
        self._advance(partition, first + count)
        return True

    def _advance(self, partition: Partition, position: int) -> None:
        self._next[partition] = position
        if self._beyond.get(partition, -1) < position:
            self._beyond.pop(partition, None)  # the hole is filled

    def seeks_due(self, now: float) -> list[tuple[Partition, int]]:
        """The partitions to seek back now, with the offset: each hole once, then every
        `seek_every_s` while it stays open.

        Records already queued past the hole keep arriving after a seek, and a seek can come to
        nothing (faust's fetch loop drops what comes below the last offset it handed on, unless
        the seek lowered that offset); the worker asks again on a timer, not only when records
        arrive (none may come).
        """
        due = []
        for partition in self._beyond:
            position = self._next[partition]
            last = self._sought.get(partition)
            if last is not None and last[0] == position and now - last[1] < self.seek_every_s:
                continue
            self._sought[partition] = (position, now)
            due.append((partition, position))
        return due

    def stuck(
        self, fetched: Mapping[Partition, int], now: float, ends: Mapping[Partition, int] | None = None
    ) -> list[tuple[Partition, int]]:
        """The partitions to seek back (and resume) although no record after a hole came: there is
        something beyond the next offset, and the next offset has not moved for two `seek_every_s`.

        Something is beyond it when the consumer has fetched past it (`fetched`: its positions) or
        the log goes on past it (`ends`: the partitions' end offsets). faust also drops the last
        records of a partition, and when nothing is produced after them no later record shows the
        hole (a SIGKILLed worker's successor would wait forever at such an offset). And once,
        after a rebalance, two workers fetched nothing at all for a minute
        while their partitions had records waiting. A seek that was not needed costs a refetch;
        the records come again as OLD.
        """
        due = []
        ends = ends or {}
        # A partition may have no fetch position at all (a consumer that does not fetch it has none).
        for partition in fetched.keys() | ends.keys():
            if partition not in self._next:
                continue
            position = self._next[partition]
            beyond = fetched.get(partition, -1) > position or ends.get(partition, -1) > position
            still = self._still.get(partition)
            if still is None or still[0] != position or not beyond:
                self._still[partition] = (position, now)
            elif now - still[1] >= 2 * self.seek_every_s:
                self._still[partition] = (position, now)
                due.append((partition, position))
        return due

    def skip(self, partition: Partition, offset: int) -> None:
        """The offsets from the position up to `offset` hold no record: the next to apply is `offset`."""
        if offset > self._next[partition]:
            self._next[partition] = offset
            self._sought.pop(partition, None)

    def position(self, partition: Partition) -> int:
        """The offset to commit: every record before it was applied here."""
        return self._next[partition]

    def reset(self) -> None:
        """A new consumer generation: positions are read again from the committed offsets."""
        self._next.clear()
        self._beyond.clear()
        self._sought.clear()
        self._still.clear()
