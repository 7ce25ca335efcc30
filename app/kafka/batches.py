"""Records sent as one aiokafka batch per topic partition, to the partition Kafka's own partitioner picks."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Collection, Mapping, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.record.default_records import DefaultRecordBatch
from aiokafka.structs import RecordMetadata

# Below the broker's default message.max.bytes (1 MiB) with room for the batch header.
MAX_BATCH_BYTES = 1000 * 1024

Headers = list[tuple[str, bytes]]  # a list: aiokafka's record builder takes no other sequence
NO_HEADERS: Headers = []
# (key, value), or (key, value, headers): a record's headers (its trace context) when it has any.
Item = tuple[bytes, bytes | None] | tuple[bytes, bytes | None, Headers]
Batches = Mapping[tuple[str, int], Sequence[Item]]  # (topic, partition) -> records


async def send_batches(
    producer: AIOKafkaProducer, batches: Batches, *, compressed: Collection[str] = ()
) -> list[asyncio.Future[RecordMetadata]]:
    """Queue each partition's records in order, as few batches as fit; return the batches' futures.

    Profiling showed aiokafka's per-record send() (a future and a pure-Python key hash
    each) dominating both the producer and the worker; its batch API costs an append.
    The topics in `compressed` are written zstd-compressed (see `_new_batch`); `producer`
    must then be one without transactions, as Sluice's are.
    """
    acks = []
    for (topic, partition), items in batches.items():
        batch = _new_batch(producer, topic in compressed)
        for item in items:
            key, value = item[0], item[1]
            headers = item[2] if len(item) == 3 else NO_HEADERS
            if batch.append(key=key, value=value, timestamp=None, headers=headers) is None:  # full: send, start anew
                acks.append(await _send(producer, batch, topic, partition))
                batch = _new_batch(producer, topic in compressed)
                batch.append(key=key, value=value, timestamp=None, headers=headers)
        acks.append(await _send(producer, batch, topic, partition))
    return acks


def _new_batch(producer: AIOKafkaProducer, compressed: bool) -> BatchBuilder:
    """An empty batch: the producer's own, or one of `MAX_BATCH_BYTES` compressed with zstd at Kafka's
    default level (3); Sluice's producers are made with that batch size.

    aiokafka sets one codec per producer, and a subscriber's client may lack one (kafkajs reads
    only gzip without a plugin). A state changelog, read by Sluice's workers alone, is JSON that
    zstd shrinks several times over at about a microsecond a kilobyte; lz4 (aiokafka's level 9)
    took four.
    """
    if not compressed:
        return producer.create_batch()
    return BatchBuilder(MAX_BATCH_BYTES, DefaultRecordBatch.CODEC_ZSTD)


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
