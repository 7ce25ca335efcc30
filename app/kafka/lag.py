"""How far a consumer group is behind a topic's end, read from the broker."""

from __future__ import annotations

from collections.abc import Iterable

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


class GroupLag:
    """A consumer group's lag per partition over some topics, read through clients kept open between reads."""

    def __init__(self, bootstrap: str) -> None:
        self._bootstrap = bootstrap
        self._clients: tuple[AIOKafkaAdminClient, AIOKafkaConsumer] | None = None

    async def read(self, group: str, topics: Iterable[str], partitions: int) -> dict[int, int]:
        """Records not yet committed by `group`, per partition number, summed over `topics` (co-partitioned:
        partition p of every topic goes to the same member). A partition never committed counts from its
        log's start."""
        admin, consumer = await self._open()
        try:
            tps = [TopicPartition(topic, p) for topic in topics for p in range(partitions)]
            ends = await consumer.end_offsets(tps)
            committed = await admin.list_consumer_group_offsets(group)
            fresh = [tp for tp in tps if tp not in committed or committed[tp].offset < 0]
            starts = await consumer.beginning_offsets(fresh) if fresh else {}
        except BaseException:
            await self.close()  # a client in an unknown state: the next read starts new ones
            raise
        lag = dict.fromkeys(range(partitions), 0)
        for tp in tps:
            done = starts[tp] if tp in starts else committed[tp].offset
            lag[tp.partition] += max(0, ends[tp] - done)
        return lag

    async def close(self) -> None:
        if self._clients is not None:
            admin, consumer = self._clients
            self._clients = None
            await consumer.stop()
            await admin.close()

    async def _open(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._clients is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap)
            consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap)
            try:
                await admin.start()
                await consumer.start()
            except BaseException:
                await consumer.stop()
                await admin.close()
                raise
            self._clients = admin, consumer
        return self._clients
