"""Records sent as aiokafka batches: complete when queued, so none waits out aiokafka's linger."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.record.default_records import DefaultRecordBatch

from app.kafka.batches import send_batches


class Recorder(AIOKafkaProducer):
    """aiokafka's producer, unstarted: its real batches, and the sends noted instead of made."""

    def __init__(self) -> None:
        super().__init__(bootstrap_servers="127.0.0.1:1", max_batch_size=1024)
        self.sent: list[tuple[str, int, int, bool]] = []  # topic, partition, records, closed
        self.built: list[tuple[str, DefaultRecordBatch]] = []  # each batch as it goes on the wire

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]:
        self.sent.append((topic, partition, batch.record_count(), batch.closed()))
        self.built.append((topic, DefaultRecordBatch(bytes(batch._build()))))  # what aiokafka's sender does
        return asyncio.get_running_loop().create_future()


async def test_each_partition_goes_in_order_in_closed_batches_as_few_as_fit() -> None:
    producer = Recorder()
    try:
        big = [(b"k%d" % n, b"v" * 100) for n in range(20)]  # about 2.5 KB: three batches of 1 KB
        acks = await send_batches(producer, {("t", 0): big, ("t", 1): [(b"k", b"v")]})
    finally:
        await producer.stop()
    assert len(acks) == len(producer.sent)
    counts = [count for topic, partition, count, _ in producer.sent if partition == 0]
    assert sum(counts) == 20 and len(counts) == 3
    assert [(topic, partition, count) for topic, partition, count, _ in producer.sent if partition == 1] == [
        ("t", 1, 1)
    ]
    # An open batch is held back for linger_ms, waiting for send() to add to it (3.4 ms a publish).
    assert all(closed for *_, closed in producer.sent)


async def test_the_topics_named_compressed_go_in_zstd_batches_and_the_others_as_the_producer_has_them() -> None:
    producer = Recorder()
    records = [(b"k%d" % n, b'{"coins":%d}' % n) for n in range(20)]
    try:
        await send_batches(producer, {("changelog", 0): records, ("effects", 0): records}, compressed=["changelog"])
    finally:
        await producer.stop()
    codecs = {topic: batch.compression_type for topic, batch in producer.built}
    assert codecs == {"changelog": DefaultRecordBatch.CODEC_ZSTD, "effects": DefaultRecordBatch.CODEC_NONE}
    for _, batch in producer.built:
        assert [(record.key, record.value) for record in batch] == records
