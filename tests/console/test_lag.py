"""The worker lag the console shows, read from a real broker: per partition, over several topics."""

from __future__ import annotations

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic, RecordsToDelete
from aiokafka.structs import OffsetAndMetadata

from app.kafka.lag import GroupLag
from tests.support.stack import new_namespace

pytestmark = pytest.mark.integration


async def test_lag_is_what_the_group_has_not_committed_per_partition_over_its_topics(kafka_bootstrap: str) -> None:
    namespace = new_namespace()
    orders, clicks, group = f"{namespace}.orders", f"{namespace}.clicks", f"{namespace}.group"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    committer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False)
    await committer.start()
    lag = GroupLag(kafka_bootstrap)
    try:
        await admin.create_topics([NewTopic(name, 2, 1) for name in (orders, clicks)])
        for topic, partition, count in ((orders, 0, 5), (orders, 1, 3), (clicks, 0, 4)):
            for _ in range(count):
                await producer.send_and_wait(topic, b"x", partition=partition)
        orders_0, clicks_0 = TopicPartition(orders, 0), TopicPartition(clicks, 0)
        committer.assign([orders_0, clicks_0])
        await committer.commit({orders_0: OffsetAndMetadata(2, ""), clicks_0: OffsetAndMetadata(4, "")})
        # orders/1 was never committed: it counts from its log's start, which deleting records moves.
        await admin.delete_records({TopicPartition(orders, 1): RecordsToDelete(1)})

        assert await lag.read(group, [orders, clicks], 2) == {0: 3, 1: 2}
        await committer.commit({orders_0: OffsetAndMetadata(5, "")})
        assert await lag.read(group, [orders, clicks], 2) == {0: 0, 1: 2}  # the same clients, read again
    finally:
        await lag.close()
        await committer.stop()
        await producer.stop()
        await admin.close()
