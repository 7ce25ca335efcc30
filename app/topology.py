"""The Kafka topics a deployment uses, named in one place, and their creation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from app.errors import ConfigError, Unavailable
from app.settings import Settings
from app.topics import Catalog

log = logging.getLogger(__name__)

EFFECTS = "effects"
# Cached effects of event ids sent again, for the producer's synchronous answers; never on `effects`.
REPLIES = "replies"
# Refused input: `dlq.<tenant>` per tenant (the producer's refusals), `dlq` for what the worker
# cannot attribute to a tenant (records it cannot decode).
DEAD_LETTERS = "dlq"
TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class Topology:
    """Kafka topic names, already inside the deployment's namespace."""

    events: Mapping[str, str]  # topic slug -> Kafka topic
    effects: str
    replies: str
    dead_letters: str
    partitions: int
    replication_factor: int
    tenants: frozenset[str] = frozenset()
    late: tuple[str, ...] = ()  # late topics of windowed tables

    @classmethod
    def of(cls, settings: Settings, catalog: Catalog, tenants: frozenset[str] = frozenset()) -> Topology:
        return cls(
            events={slug: settings.kafka_topic(spec.kafka_topic) for slug, spec in catalog.items()},
            effects=settings.kafka_topic(EFFECTS),
            replies=settings.kafka_topic(REPLIES),
            dead_letters=settings.kafka_topic(DEAD_LETTERS),
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            tenants=tenants,
            late=tuple(sorted({settings.kafka_topic(t.late_topic) for t in catalog.tables().values() if t.late_topic})),
        )

    def tenant_dead_letters(self, tenant: str) -> str:
        return f"{self.dead_letters}.{tenant}"

    @property
    def all_topics(self) -> list[str]:
        dlqs = [self.tenant_dead_letters(tenant) for tenant in sorted(self.tenants)]
        return [*self.events.values(), self.effects, self.replies, self.dead_letters, *dlqs, *self.late]

    def slug_of(self, kafka_topic: str) -> str | None:
        for slug, name in self.events.items():
            if name == kafka_topic:
                return slug
        return None


async def ensure_topics(bootstrap: str, topology: Topology) -> None:
    """Create missing topics; refuse to run on topics whose partition count differs.

    Every event topic, the effects topic and the worker's tables share one partition
    count, so one user's partition number is the same everywhere (co-partitioning).
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-admin")
    try:
        await admin.start()
    except KafkaError as exc:
        await admin.close()
        raise Unavailable(
            f"cannot reach Kafka at {bootstrap} ({exc}); start one with `sluice kafka` or set "
            "SLUICE_KAFKA_BOOTSTRAP_SERVERS",
            field="SLUICE_KAFKA_BOOTSTRAP_SERVERS",
        ) from exc
    try:
        wanted = topology.all_topics
        response = await admin.create_topics(
            [NewTopic(name, topology.partitions, topology.replication_factor) for name in wanted]
        )
        for result in response.to_object()["topic_errors"]:
            if result["error_code"] not in (0, TOPIC_ALREADY_EXISTS):
                raise ConfigError(
                    f"cannot create Kafka topic {result['topic']}: {result['error_message']}",
                    field=result["topic"],
                )
            if result["error_code"] == 0:
                log.info("created Kafka topic %s (%d partitions)", result["topic"], topology.partitions)
        for described in await _describe_when_ready(admin, wanted):
            count = len(described["partitions"])
            if count != topology.partitions:
                raise ConfigError(
                    f"Kafka topic {described['topic']} has {count} partitions, Sluice is set to "
                    f"{topology.partitions} (SLUICE_PARTITIONS); they must match",
                    field="SLUICE_PARTITIONS",
                )
    finally:
        await admin.close()


async def _describe_when_ready(admin: AIOKafkaAdminClient, topics: list[str], timeout: float = 15.0) -> list[Any]:
    """Describe topics once every one has partitions: a topic just created may show none yet."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described: list[Any] = await admin.describe_topics(topics)
        if all(d["error_code"] == 0 and d["partitions"] for d in described):
            return described
        if asyncio.get_running_loop().time() > deadline:
            return described
        await asyncio.sleep(0.1)
