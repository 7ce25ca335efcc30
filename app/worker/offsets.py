"""The consumer group's committed offsets, read from the broker: where the worker's progress starts."""

from __future__ import annotations

from types import TracebackType

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


class CommittedOffsets:
    """The consumer group's committed offsets, read from the broker (where a generation starts)."""

    def __init__(self, bootstrap: str, group_id: str) -> None:
        self._group_id = group_id
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-worker-offsets")

    async def __aenter__(self) -> CommittedOffsets:
        await self._admin.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._admin.close()

    async def get(self, where: tuple[str, int]) -> int | None:
        """The committed offset of (topic, partition); None if the group has none there."""
        offsets = await self._admin.list_consumer_group_offsets(self._group_id, partitions=[TopicPartition(*where)])
        found = offsets.get(TopicPartition(*where))
        return found.offset if found is not None and found.offset >= 0 else None
