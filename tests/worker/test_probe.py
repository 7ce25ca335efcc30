"""The Intake's probe on the real broker: where a partition's records go on from an offset."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from app.worker.probe import Probe
from tests.support.topics import new_topic

pytestmark = pytest.mark.integration


async def records_of(bootstrap: str, tp: TopicPartition) -> tuple[list[int], int]:
    """The offsets a plain consumer is handed, and the log's end."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        consumer.seek(tp, 0)
        offsets: list[int] = []
        while consumer.highwater(tp) is None or await consumer.position(tp) < end:
            offsets += [m.offset for m in (await consumer.getmany(tp, timeout_ms=1000)).get(tp, [])]
        return offsets, end
    finally:
        await consumer.stop()


async def test_records_markers_and_expired_offsets(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, "probe")
    tp = TopicPartition(topic, 0)
    plain = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    transactional = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, transactional_id="probe-" + uuid.uuid4().hex)
    await plain.start()
    await transactional.start()
    try:
        for n in range(3):
            await plain.send_and_wait(topic, b"r%d" % n)
        for _ in range(2):  # each ends with a commit marker: an offset no consumer is handed
            async with transactional.transaction():
                await transactional.send(topic, b"t")
            await plain.send_and_wait(topic, b"after")
        async with transactional.transaction():  # and a marker at the log's end
            await transactional.send(topic, b"t")
    finally:
        await transactional.stop()
        await plain.stop()
    records, end = await records_of(kafka_bootstrap, tp)
    assert len(records) == 8 and end == 11  # three markers
    async with Probe(kafka_bootstrap) as probe:
        for offset in range(end):
            expected = min((r for r in records if r >= offset), default=end)
            assert await probe.first_at((topic, 0), offset) == expected, offset
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.delete_records({tp: RecordsToDelete(before_offset=2)})
        finally:
            await admin.close()
        # 0 and 1 expired: the records go on at 2, not at the log's end.
        assert await probe.first_at((topic, 0), 0) == 2
