"""The consumer group's lag per partition, read from the broker at each scrape: committed offsets against log ends."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client.metrics_core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from app.observability.metrics import GROUP_LAG_NAME

log = logging.getLogger(__name__)


class GroupLag(Collector):
    """`sluice_consumer_group_lag_records{group, topic, partition}` of one group over some topics.

    Read by the producer, not the worker: a lag that rises while every worker is down is the lag an
    operator most needs to see. A partition the group never committed counts from the log's start.
    """

    def __init__(
        self, bootstrap: str, group: str, topics: Sequence[str], partitions: int, *, timeout_s: float = 5.0
    ) -> None:
        self._bootstrap, self._group, self._timeout_s = bootstrap, group, timeout_s
        self._partitions = [TopicPartition(topic, p) for topic in topics for p in range(partitions)]
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lags: dict[TopicPartition, int] = {}

    async def refresh(self) -> None:
        """Read the lags again (before a scrape); on a broker error the last ones stay out of it."""
        try:
            async with asyncio.timeout(self._timeout_s):
                self._lags = await self._read()
        except (KafkaError, TimeoutError, OSError) as exc:
            log.warning("could not read the lag of consumer group %s: %r", self._group, exc)
            self._lags = {}
            await self.stop()  # started afresh at the next scrape

    async def _read(self) -> dict[TopicPartition, int]:
        if self._admin is None or self._consumer is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id="sluice-lag")
            self._consumer = AIOKafkaConsumer(bootstrap_servers=self._bootstrap, client_id="sluice-lag")
            await self._admin.start()
            await self._consumer.start()
        partitions = self._partitions
        ends = await self._consumer.end_offsets(partitions)
        committed = await self._admin.list_consumer_group_offsets(self._group, partitions=partitions)
        lags = {}
        for tp in partitions:
            at = committed.get(tp)
            start = at.offset if at is not None and at.offset >= 0 else 0
            lags[tp] = max(0, ends[tp] - start)
        return lags

    async def stop(self) -> None:
        admin, consumer, self._admin, self._consumer = self._admin, self._consumer, None, None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            GROUP_LAG_NAME,
            "Records of a topic partition the consumer group has not committed yet (log end minus committed offset).",
            labels=["group", "topic", "partition"],
        )
        for tp, lag in sorted(self._lags.items()):
            family.add_metric([self._group, tp.topic, str(tp.partition)], lag)
        yield family
