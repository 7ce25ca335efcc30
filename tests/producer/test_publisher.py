"""Group commit on the real broker: concurrent callers share batches, lose nothing, keep each key's order."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.producer.publisher import Publisher, partition_of
from app.schemas import SchemaSet
from tests.support.stack import read_raw_until

pytestmark = pytest.mark.integration
SCHEMAS = SchemaSet.load(Path(__file__).resolve().parents[2] / "schemas")


async def test_concurrent_callers_lose_nothing_and_keep_order(kafka_bootstrap: str) -> None:
    topic = "publisher-" + uuid.uuid4().hex[:8]
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, 4, 1)])
    await admin.close()

    keys = [f"acme:user-{i}".encode() for i in range(7)]
    async with Publisher(kafka_bootstrap, dead_letter_schema=SCHEMAS["dead_letter"], timeout_s=30) as publisher:
        # 200 callers at once; each key's records are numbered in the order they were handed over.
        sequence = {key: 0 for key in keys}

        def request(n: int) -> list[tuple[str, bytes, bytes]]:
            records = []
            for key in (keys[n % 7], keys[(n * 3) % 7]):
                records.append((topic, key, str(sequence[key]).encode()))
                sequence[key] += 1
            return records

        await asyncio.gather(*(publisher.publish_many(request(n)) for n in range(200)))

    messages = await read_raw_until(kafka_bootstrap, topic, lambda ms: len(ms) >= 400)
    assert len(messages) == 400
    for key in keys:
        values = [int(m.value) for m in messages if m.key == key]
        assert values == list(range(sequence[key])), key  # every record, in order
        assert {m.partition for m in messages if m.key == key} == {partition_of(key, 4)}
