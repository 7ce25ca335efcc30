"""Records sent as one aiokafka batch per topic partition, to the partition Kafka's own partitioner picks."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Mapping, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata

# Below the broker's default message.max.bytes (1 MiB) with room for the batch header.
MAX_BATCH_BYTES = 1000 * 1024

Headers = list[tuple[str, bytes]]  # a list: aiokafka's record builder takes no other sequence
NO_HEADERS: Headers = []
# (key, value), or (key, value, headers): a record's headers (its trace context) when it has any.
Item = tuple[bytes, bytes | None] | tuple[bytes, bytes | None, Headers]
Batches = Mapping[tuple[str, int], Sequence[Item]]  # (topic, partition) -> records


async def send_batches(producer: AIOKafkaProducer, batches: Batches) -> list[asyncio.Future[RecordMetadata]]:
    """Queue each partition's records in order, as few batches as fit; return the batches' futures.

    Profiling showed aiokafka's per-record send() (a future and a pure-Python key hash
    each) dominating both the producer and the worker; its batch API costs an append.
    """
    acks = []
    for (topic, partition), items in batches.items():
        batch = producer.create_batch()
        for item in items:
            key, value = item[0], item[1]
            headers = item[2] if len(item) == 3 else NO_HEADERS
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full: send, start anew
                acks.append(await _send(producer, batch, topic, partition))
                batch = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        acks.append(await _send(producer, batch, topic, partition))
    return acks


async def _send(
    producer: AIOKafkaProducer, batch: BatchBuilder, topic: str, partition: int
) -> asyncio.Future[RecordMetadata]:
    # Closed: aiokafka holds an open batch back for linger_ms, waiting for send() to add to it.
    # These batches are complete when queued, so they go out with the next request.
    batch.close()
    sent: asyncio.Future[RecordMetadata] = await producer.send_batch(batch, topic, partition=partition)
    return sent


@functools.lru_cache(maxsize=65536)
def partition_of(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for keyed records (murmur2, as Java and aiokafka compute it).

    Cached: the same users send again and again, and murmur2 is pure Python.
    """
    hashed: int = murmur2(key)
    return (hashed & 0x7FFFFFFF) % partitions
