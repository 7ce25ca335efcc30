"""The worker's outbox on the real broker: records sent go out at once, and a flush waits for them all."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.record.default_records import DefaultRecordBatch

from app.worker.outbox import Outbox
from tests.support.topics import new_topic, stored_codecs

pytestmark = pytest.mark.integration


def log_end_reaches(bootstrap: str, tp: TopicPartition, end: int, timeout: float) -> bool:
    """Watched from another thread and event loop, so the caller's loop may stay blocked meanwhile."""

    async def watch() -> bool:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
        await consumer.start()
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if (await consumer.end_offsets([tp]))[tp] >= end:
                    return True
                await asyncio.sleep(0.05)
            return False
        finally:
            await consumer.stop()

    reached: list[bool] = []
    watcher = threading.Thread(target=lambda: reached.append(asyncio.run(watch())))
    watcher.start()
    watcher.join()  # blocks this loop, as applying the next partition does
    return reached == [True]


async def test_sent_records_reach_kafka_while_the_loop_is_busy(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, "outbox")
    async with Outbox(kafka_bootstrap, timeout_s=10) as outbox:
        for n in range(3):
            outbox.add(topic, 0, b"k%d" % n, b"v")
        await outbox.send()
        assert log_end_reaches(kafka_bootstrap, TopicPartition(topic, 0), 3, timeout=10)
        assert await outbox.flush() == {(topic, 0): 0}


async def test_a_flush_waits_for_every_send_and_gives_each_partitions_last_batch(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, "outbox", 2)
    async with Outbox(kafka_bootstrap, timeout_s=10) as outbox:
        outbox.add(topic, 0, b"a", b"1")
        outbox.add(topic, 0, b"b", b"2")
        await outbox.send()
        outbox.add(topic, 0, b"c", b"3")
        outbox.add(topic, 1, b"d", b"4")
        assert await outbox.flush() == {(topic, 0): 2, (topic, 1): 0}
        assert await outbox.flush() == {}


async def test_records_extended_a_batch_at_a_time_go_in_order_and_none_is_nothing(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, "outbox")
    async with Outbox(kafka_bootstrap, timeout_s=10) as outbox:
        outbox.extend(topic, 0, [])  # a batch that wrote nothing sends nothing
        assert await outbox.flush() == {}
        outbox.add(topic, 0, b"a", b"1")
        outbox.extend(topic, 0, [(b"b", b"2"), (b"c", None)])
        assert await outbox.flush() == {(topic, 0): 0}
        assert log_end_reaches(kafka_bootstrap, TopicPartition(topic, 0), 3, timeout=10)


async def test_a_dispatch_is_sent_at_once_and_acked_in_its_future(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, "outbox")
    async with Outbox(kafka_bootstrap, timeout_s=10) as outbox:
        outbox.add(topic, 0, b"a", b"1")
        first = await outbox.dispatch()
        assert log_end_reaches(kafka_bootstrap, TopicPartition(topic, 0), 1, timeout=10)  # the loop busy meanwhile
        outbox.add(topic, 0, b"b", b"2")  # goes with the next dispatch, not the first
        second = await outbox.dispatch()
        assert await first == {(topic, 0): 0}
        assert await second == {(topic, 0): 1}
        assert await outbox.flush() == {}


async def test_the_topics_named_compressed_are_stored_zstd_and_read_back_as_written(kafka_bootstrap: str) -> None:
    changelog, effects = await new_topic(kafka_bootstrap, "outbox"), await new_topic(kafka_bootstrap, "outbox")
    records = [(b"k%d" % n, b'{"applied_at_ms":%d,"effect":{"coins":10}}' % n) for n in range(200)]
    async with Outbox(kafka_bootstrap, timeout_s=10, compressed=[changelog]) as outbox:
        outbox.extend(changelog, 0, records)
        outbox.extend(effects, 0, records)
        await outbox.flush()
    assert set(await stored_codecs(kafka_bootstrap, changelog)) == {DefaultRecordBatch.CODEC_ZSTD}
    # What subscribers read stays uncompressed: not every client has every codec.
    assert set(await stored_codecs(kafka_bootstrap, effects)) == {DefaultRecordBatch.CODEC_NONE}
    for topic in (changelog, effects):
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            read: list[tuple[bytes | None, bytes | None]] = []
            while len(read) < len(records):
                for batch in (await consumer.getmany(timeout_ms=1000)).values():
                    read += [(record.key, record.value) for record in batch]
        finally:
            await consumer.stop()
        assert read == records
