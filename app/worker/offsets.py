"""The consumer group's committed offsets, read from the broker: where the worker's progress starts."""

from __future__ import annotations

from collections.abc import Collection
from types import TracebackType
from typing import TypeVar

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

Partition = TypeVar("Partition", bound=tuple[str, int])  # faust's TP or aiokafka's TopicPartition


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

    async def get(self, partitions: Collection[Partition]) -> dict[Partition, int]:
        """The committed offsets of these (topic, partition) pairs; a pair the group has none of is left out."""
        found = await self._admin.list_consumer_group_offsets(
            self._group_id, partitions=[TopicPartition(*where) for where in partitions]
        )
        offsets = {}
        for where in partitions:
            at = found.get(TopicPartition(*where))
            if at is not None and at.offset >= 0:
                offsets[where] = at.offset
        return offsets
