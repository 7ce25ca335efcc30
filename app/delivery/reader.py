"""Read one stream (a Kafka topic, every partition) from exact positions, with the cursor after each record."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.delivery import cursor
from app.errors import SchemaError
from app.schemas import SchemaSet


@dataclass(frozen=True, slots=True)
class Item:
    record: dict[str, Any]
    partition: int
    offset: int
    cursor: str  # positions right after this record: resuming from it yields what follows


class StreamReader:
    """A consumer without a group, assigned every partition: positions are the client's, not Kafka's.

    Records come in per-partition order. Positions advance over every record read, matching
    or not, so a cursor never points back at a record a filter already passed over.
    """

    def __init__(self, bootstrap: str, topic: str, partitions: int, schemas: SchemaSet) -> None:
        self._topic = topic
        self._parts = [TopicPartition(topic, p) for p in range(partitions)]
        self._schemas = schemas
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
        )
        self.positions: dict[int, int] = {}

    async def open(self, positions: Mapping[int, int] | None, *, from_end: bool) -> None:
        """Start at `positions`; partitions without one start at the end (`from_end`) or the beginning."""
        await self._consumer.start()
        self._consumer.assign(self._parts)
        given = positions or {}
        rest = [tp for tp in self._parts if tp.partition not in given]
        if rest:
            await (self._consumer.seek_to_end(*rest) if from_end else self._consumer.seek_to_beginning(*rest))
        for tp in self._parts:
            if tp.partition in given:
                self._consumer.seek(tp, given[tp.partition])
        # Resolved now, before any record is produced: a stream "from now" misses nothing after this.
        self.positions = {tp.partition: await self._consumer.position(tp) for tp in self._parts}

    async def close(self) -> None:
        await self._consumer.stop()

    @property
    def cursor(self) -> str:
        return cursor.encode(self.positions)

    async def at_end(self) -> bool:
        ends = await self._consumer.end_offsets(self._parts)
        return all(self.positions[tp.partition] >= end for tp, end in ends.items())

    async def read(self, timeout_ms: int, max_records: int | None = None) -> list[Item]:
        """The next records, decoded; undecodable ones are passed over."""
        batch = await self._consumer.getmany(*self._parts, timeout_ms=timeout_ms, max_records=max_records)
        items: list[Item] = []
        for tp, messages in batch.items():
            for message in messages:
                self.positions[tp.partition] = message.offset + 1
                try:
                    _, record = self._schemas.decode(message.value)
                except SchemaError:
                    continue
                items.append(Item(record, tp.partition, message.offset, self.cursor))
        return items
