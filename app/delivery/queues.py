"""A webhook subscription's own queue topic, `deliveries.<tenant>.<name>`, and what its records carry."""

from __future__ import annotations

from collections.abc import Sequence

from app.core.subscription import Subscription
from app.delivery.webhook import DELIVERY_HEADER
from app.kafka.topology import Topology, ensure_topic

ID_HEADER = DELIVERY_HEADER.lower()
# The subscription's created_ms: one deleted and made again under the same name skips what the old one left.
GENERATION_HEADER = "sluice-generation"


class Queues:
    """Names the queue topics and makes each once per process, before it is first written or read.

    As many partitions as the sources, so that a source partition's deliveries (each user's, in
    order) go to the partition of the same number.
    """

    def __init__(self, bootstrap: str, topology: Topology) -> None:
        self._bootstrap = bootstrap
        self._topology = topology
        self._ready: set[str] = set()
        self._names: dict[str, str] = {}

    def topic(self, sub: Subscription) -> str:
        name = self._names.get(sub.key)
        if name is None:
            name = self._names[sub.key] = self._topology.deliveries(sub.tenant, sub.name)
        return name

    def ready(self, topic: str) -> bool:
        return topic in self._ready

    async def ensure(self, topic: str) -> None:
        if topic not in self._ready:
            await ensure_topic(self._bootstrap, topic, self._topology.partitions, self._topology.replication_factor)
            self._ready.add(topic)


def header(headers: Sequence[tuple[str, bytes]], name: str) -> bytes | None:
    for key, value in headers:
        if key == name:
            return value
    return None
