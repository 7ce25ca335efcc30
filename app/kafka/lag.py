"""How far a consumer group is behind a topic's end, read from the broker."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


async def group_done(bootstrap: str, group: str, topic: str, partitions: int) -> bool:
    """Has the consumer group committed every partition of the topic to its log's end (an empty
    partition needs no commit)?"""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        committed = await admin.list_consumer_group_offsets(group)
        return all((committed[tp].offset if tp in committed else 0) >= ends[tp] for tp in tps)
    finally:
        await consumer.stop()
        await admin.close()
