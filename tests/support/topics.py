"""A fresh Kafka topic per test: tests share the session's broker, never a topic."""

from __future__ import annotations

import uuid

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.record.memory_records import MemoryRecords


async def new_topic(bootstrap: str, prefix: str, partitions: int = 1) -> str:
    """Create `<prefix>-<random>` with `partitions` partitions; its name."""
    topic = f"{prefix}-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()
    return topic


async def stored_codecs(bootstrap: str, topic: str, partitions: int = 1) -> list[int]:
    """The compression codec of each record batch Kafka stores in `topic`, as a fetch returns them.

    A consumer decompresses without saying how a batch came; the raw fetch shows what is on disk.
    """
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    try:
        await client.force_metadata_update()
        codecs: list[int] = []
        for partition in range(partitions):
            leader = client.cluster.leader_for_partition(TopicPartition(topic, partition))
            request = FetchRequest(100, 1, 50_000_000, 0, [(topic, [(partition, 0, 50_000_000)])])
            response = await client.send(leader, request)
            ((_, ((_, error, *_, records),)),) = response.topics
            assert error == 0, f"fetch of {topic}[{partition}]: error {error}"
            stored = MemoryRecords(records)
            while stored.has_next():
                batch = stored.next_batch()
                assert batch is not None
                codecs.append(batch.compression_type)
        return codecs
    finally:
        await client.close()
