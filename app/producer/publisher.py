"""One aiokafka producer (acks=all, idempotent) for events and dead letters."""

from __future__ import annotations

import asyncio
import functools
import logging
from types import TracebackType

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2

from app.dead_letter import DeadLetter
from app.errors import Unavailable
from app.schemas import Schema

log = logging.getLogger(__name__)


class Publisher:
    def __init__(self, bootstrap: str, *, dead_letter_schema: Schema, timeout_s: float) -> None:
        self._timeout_s = timeout_s
        self._dead_letter_schema = dead_letter_schema
        self._partition_counts: dict[str, int] = {}
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap,
            client_id="sluice-producer",
            acks="all",
            enable_idempotence=True,
            linger_ms=2,
            request_timeout_ms=int(timeout_s * 1000),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def __aenter__(self) -> Publisher:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def publish(self, topic: str, key: bytes, value: bytes) -> None:
        """Return only once every in-sync replica has the record; else raise Unavailable."""
        try:
            await asyncio.wait_for(self._producer.send_and_wait(topic, value, key=key), self._timeout_s)
        except (KafkaError, TimeoutError) as exc:
            log.warning("publish to %s failed: %r", topic, exc)
            raise Unavailable("Kafka did not acknowledge the write; retry later") from exc

    async def publish_many(self, records: list[tuple[str, bytes, bytes]]) -> None:
        """Send (topic, key, value) records together; return once Kafka acknowledged every one.

        Records are grouped into one batch per partition: aiokafka's per-record send()
        makes a future and hashes the key for every record, which dominated the profile.
        """
        if not records:
            return
        try:
            async with asyncio.timeout(self._timeout_s):
                by_partition: dict[tuple[str, int], list[tuple[bytes, bytes]]] = {}
                for topic, key, value in records:
                    partition = partition_of(key, await self._partition_count(topic))
                    by_partition.setdefault((topic, partition), []).append((key, value))
                acks = []
                for (topic, partition), items in by_partition.items():
                    batch = self._producer.create_batch()
                    for key, value in items:
                        if batch.append(key=key, value=value, timestamp=None) is None:  # full: send, start anew
                            acks.append(await self._producer.send_batch(batch, topic, partition=partition))
                            batch = self._producer.create_batch()
                            batch.append(key=key, value=value, timestamp=None)
                    acks.append(await self._producer.send_batch(batch, topic, partition=partition))
                await asyncio.gather(*acks)
        except (KafkaError, TimeoutError) as exc:
            log.warning("publish of %d records failed: %r", len(records), exc)
            raise Unavailable("Kafka did not acknowledge the write; retry later") from exc

    async def _partition_count(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            count = len(await self._producer.partitions_for(topic))
            self._partition_counts[topic] = count
        return count

    async def dead_letter(self, topic: str, letter: DeadLetter) -> None:
        """Keep a refused input. The client's error stands even if Kafka is down, so only log."""
        try:
            await self.publish(
                topic, (letter.tenant or "").encode(), self._dead_letter_schema.encode(letter.to_record())
            )
        except Unavailable:
            log.error("could not keep a refused %s input on %s", letter.source, topic)


@functools.lru_cache(maxsize=65536)
def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for keyed records (murmur2, as Java and aiokafka compute it).

    Cached: the same users send again and again, and murmur2 is pure Python.
    """
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
