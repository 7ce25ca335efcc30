"""What is due in a table on this worker's own partitions: the timetable, rebuilt from RocksDB on each assignment."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

import faust

from app.scheduling.send_at import Timetable
from app.settings import Settings
from app.worker import faust_compat, intake
from app.worker.outbox import Outbox

log = logging.getLogger(__name__)

FAUST_KEYS = b"__faust"  # faust keeps its changelog offset in each partition's RocksDB
TICK_S = 0.2  # how often due entries are looked for: well inside the one-second promise

Due = list[tuple[int, bytes, bytes]]  # (partition, key, value)


def keyed_state(app: faust.App, topic: str, table: str, partitions: int) -> tuple[Any, Any]:
    """A topic of raw records and a RocksDB table of raw values, co-partitioned with it.

    faust writes a table to the partition of the event being processed, so the two must match.
    """
    source = intake.source(app, topic, partitions=partitions)
    state = app.Table(
        table,
        default=None,
        partitions=partitions,
        key_type=bytes,
        value_type=bytes,
        options={"driver": "rocksdict"},
    )
    return source, state


class Alarm:
    """Due entries of `table`, among the partitions of `topic` this worker has as active.

    Faust writes a table only from its agent, so the agent `push`es what it stores; a
    timer task asks for what is `due`. After a rebalance or recovery the timetable is
    rebuilt from RocksDB (the table then holds what the changelog recovered), and a
    standby partition is never acted on. `due_of(value)` is an entry's due time in ms,
    or None when it needs nothing.
    """

    def __init__(self, app: faust.App, topic: str, table: Any, due_of: Callable[[bytes], int | None]) -> None:
        self._app = app
        self._topic = topic
        self._table = table
        self._due_of = due_of
        self._timetable = Timetable()
        self._scanned: frozenset[int] | None = None

    def push(self, due_ms: int, partition: int, key: bytes) -> None:
        self._timetable.push(due_ms, partition, key)

    def run(self, settings: Settings, act: Callable[[Outbox, Due], Awaitable[None]], what: str) -> None:
        """Every tick, hand what is due to `act`, with an idempotent producer; on failure, retry it later."""

        async def loop() -> None:
            async with Outbox(settings.kafka.bootstrap, timeout_s=settings.producer.publish_timeout_s) as outbox:
                while True:
                    await asyncio.sleep(TICK_S)
                    due = self.due(int(time.time() * 1000))
                    if not due:
                        continue
                    try:
                        await act(outbox, due)
                    except Exception:
                        log.exception("%s: %d due entries failed; retrying", what, len(due))
                        for partition, key, value in due:
                            self.push(self._due_of(value) or 0, partition, key)
                        await asyncio.sleep(1.0)

        self._app.task(loop)

    def due(self, now_ms: int) -> Due:
        """(partition, key, value) of every entry due now, each once (push it again to retry)."""
        app = cast(Any, self._app)
        if app.rebalancing or app.in_recovery:
            self._scanned = None  # whatever we had may be moving: rebuild once it settles
            return []
        active = frozenset(tp.partition for tp in app.assignor.assigned_actives() if tp.topic == self._topic)
        if active != self._scanned:
            self._rebuild(active)
        found = []
        for partition, key in self._timetable.pop_due(now_ms):
            value = self._db(partition).get(key)
            if value is None:
                continue  # cancelled or done since it was pushed
            due = self._due_of(value)
            if due is None:
                continue
            if due > now_ms:  # stored again with a later time
                self._timetable.push(due, partition, key)
                continue
            found.append((partition, key, value))
        return found

    def _rebuild(self, active: frozenset[int]) -> None:
        self._timetable = Timetable()
        for partition in active:
            for key, value in self._db(partition).items():
                if key.startswith(FAUST_KEYS):
                    continue
                due = self._due_of(value)
                if due is not None:
                    self._timetable.push(due, partition, key)
        self._scanned = active

    def _db(self, partition: int) -> Any:
        return faust_compat.partition_db(self._table, partition)
