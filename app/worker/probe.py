"""A partition read straight from the broker, outside faust: the first record at or after an offset."""

from __future__ import annotations

import time
from types import TracebackType

from aiokafka import AIOKafkaConsumer, TopicPartition


class Probe:
    """Answers whether offsets hold records, for the Intake to tell a hole faust made from offsets
    that never hold one: a transactional producer's commit and abort markers take offsets that no
    consumer is handed. One consumer of no group, reading as faust's does (uncommitted records too).
    """

    def __init__(self, bootstrap: str) -> None:
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            client_id="sluice-worker-probe",
            group_id=None,
            enable_auto_commit=False,
            isolation_level="read_uncommitted",
            fetch_max_wait_ms=100,
            # Records before the log's start expired: the first record there is where they go on.
            # aiokafka's default (the log's end) would skip every record still in the log.
            auto_offset_reset="earliest",
        )

    async def __aenter__(self) -> Probe:
        await self._consumer.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._consumer.stop()

    async def first_at(self, where: tuple[str, int], offset: int, *, timeout_s: float = 1.0) -> int:
        """Where the records of a partition go on from `offset`: the first record's offset, or, when
        only markers follow to the log's end, the offset after them; `offset` if nothing is known."""
        tp = TopicPartition(*where)
        self._consumer.assign([tp])
        self._consumer.seek(tp, offset)
        deadline = time.monotonic() + timeout_s
        while True:
            # Short polls: the Intake holds its batch lock meanwhile, and markers alone at the
            # log's end are known after one fetch, not after the whole timeout.
            fetched = await self._consumer.getmany(tp, timeout_ms=100, max_records=1)
            records = fetched.get(tp, [])
            if records:
                return int(records[0].offset)
            # aiokafka moves its position past the control batches it fetched and hands on nothing.
            position: int = await self._consumer.position(tp)
            if position > offset or time.monotonic() >= deadline:
                return max(offset, position)
