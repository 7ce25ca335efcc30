"""Read one stream (a Kafka topic, every partition) from exact positions, with the cursor after each record."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from app.avro.schemas import SchemaSet
from app.core import cursor
from app.delivery.payload import dumps, record_json
from app.errors import SchemaError, Unavailable


@dataclass(slots=True)
class Decoded:
    """A record decoded once per process, and its JSON made once, however many streams send it."""

    stream: str
    record: dict[str, Any]
    _json: bytes | None = None

    @property
    def json(self) -> bytes:
        if self._json is None:
            self._json = dumps(record_json(self.stream, self.record))
        return self._json


class DecodedCache:
    """The most recently decoded records, by (topic, partition, offset).

    Profiled: with ten SSE streams of one topic, Avro decoding was 60% of the server's
    time, each stream decoding the same records again. Streams that read near each other
    (the live ones) now share one decoding; the rest decode for themselves.
    """

    def __init__(self, schemas: SchemaSet, size: int = 50_000) -> None:
        self._schemas = schemas
        self._size = size
        self._entries: OrderedDict[tuple[str, int, int], Decoded | None] = OrderedDict()

    def get(self, stream: str, topic: str, partition: int, offset: int, value: bytes) -> Decoded | None:
        """The decoded record, or None if it does not decode."""
        key = (topic, partition, offset)
        if key in self._entries:
            return self._entries[key]
        try:
            decoded: Decoded | None = Decoded(stream, self._schemas.decode(value)[1])
        except SchemaError:
            decoded = None
        self._entries[key] = decoded
        if len(self._entries) > self._size:
            self._entries.popitem(last=False)
        return decoded


class Decoder(Protocol):
    """What turns a stream's raw values into records: DecodedCache for Avro, others for JSON topics."""

    def get(self, stream: str, topic: str, partition: int, offset: int, value: bytes) -> Decoded | None: ...


@dataclass(frozen=True, slots=True)
class Item:
    decoded: Decoded
    partition: int
    offset: int
    positions: Mapping[int, int] = field(repr=False)  # every partition's next offset, right after this record

    @property
    def record(self) -> dict[str, Any]:
        return self.decoded.record

    @property
    def cursor(self) -> str:
        """Where to resume to get exactly what follows this record."""
        return cursor.encode(self.positions)


class StreamReader:
    """A consumer without a group, assigned every partition: positions are the client's, not Kafka's.

    Records come in per-partition order. Positions advance over every record read, matching
    or not, so a cursor never points back at a record a filter already passed over.
    """

    def __init__(
        self, bootstrap: str, topic: str, stream: str, partitions: int, cache: Decoder, *, fetch_max_wait_ms: int
    ) -> None:
        self._topic = topic
        self._stream = stream
        self._parts = [TopicPartition(topic, p) for p in range(partitions)]
        self._cache = cache
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=fetch_max_wait_ms,
        )
        self.positions: dict[int, int] = {}

    async def open(self, positions: Mapping[int, int] | None, *, from_end: bool, field: str) -> None:
        """Start at `positions`; partitions without one start at the end (`from_end`) or the beginning.

        A position past a partition's end is refused, naming `field`: Kafka would reset it
        to the oldest record and the client would get everything again.
        """
        try:
            await self._open(positions, from_end, field)
        except KafkaError as exc:
            raise Unavailable(f"cannot read the stream from Kafka ({exc}); retry later") from exc

    async def _open(self, positions: Mapping[int, int] | None, from_end: bool, field: str) -> None:
        await self._consumer.start()
        self._consumer.assign(self._parts)
        given = positions or {}
        if given:
            ends = await self._consumer.end_offsets(self._parts)
            cursor.check_reachable(given, {tp.partition: end for tp, end in ends.items()}, field)
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
        try:
            ends = await self._consumer.end_offsets(self._parts)
        except KafkaError as exc:
            raise Unavailable(f"cannot read the stream from Kafka ({exc}); retry later") from exc
        return all(self.positions[tp.partition] >= end for tp, end in ends.items())

    async def read(self, timeout_ms: int, max_records: int | None = None) -> list[Item]:
        """The next records, decoded; undecodable ones are passed over."""
        batch = await self._consumer.getmany(*self._parts, timeout_ms=timeout_ms, max_records=max_records)
        items: list[Item] = []
        for tp, messages in batch.items():
            for message in messages:
                self.positions[tp.partition] = message.offset + 1
                decoded = self._cache.get(self._stream, self._topic, tp.partition, message.offset, message.value)
                if decoded is not None:
                    items.append(Item(decoded, tp.partition, message.offset, dict(self.positions)))
        return items
