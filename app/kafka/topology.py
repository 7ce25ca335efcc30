"""The Kafka topics a deployment uses, named in one place, and their creation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

from app.avro.schemas import SchemaSet
from app.catalog import Catalog
from app.errors import ConfigError, Unavailable
from app.scheduling.send_at import Routes
from app.settings import KafkaSettings

log = logging.getLogger(__name__)

EFFECTS = "effects"
# Cached effects of event ids sent again, for the producer's synchronous answers; never on `effects`.
REPLIES = "replies"
# Refused input: `dlq.<tenant>` per tenant (the producer's refusals), `dlq` for what the worker
# cannot attribute to a tenant (records it cannot decode).
DEAD_LETTERS = "dlq"
# Events with a future send_at, and their cancel / delivered commands, keyed '<tenant>:<topic>:<id>'.
SCHEDULED = "scheduled"
# Wait group definitions and instances, for the producer's checks; keyed '<tenant>:<id>'.
WAIT_GROUPS = "wait_groups"
# What the worker counts per instance (instances, arrived events, deadline ticks), keyed '<tenant>:<instance>'.
WAIT_GROUP_EVENTS = "wait_group_events"
TOPIC_ALREADY_EXISTS = 36
# Subscriptions created over HTTP (compacted, key tenant:name); `parked.<tenant>.<name>` holds a
# webhook subscription's deliveries that failed for good, until an operator replays them.
SUBSCRIPTIONS = "subscriptions"
PARKED = "parked"


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
    scheduled: str = SCHEDULED
    wait_groups: str = WAIT_GROUPS
    wait_group_events: str = WAIT_GROUP_EVENTS
    late: tuple[str, ...] = ()  # late topics of windowed tables

    @classmethod
    def of(cls, kafka: KafkaSettings, catalog: Catalog, tenants: frozenset[str] = frozenset()) -> Topology:
        return cls(
            events={slug: kafka.topic(spec.kafka_topic) for slug, spec in catalog.items()},
            effects=kafka.topic(EFFECTS),
            replies=kafka.topic(REPLIES),
            dead_letters=kafka.topic(DEAD_LETTERS),
            partitions=kafka.partitions,
            replication_factor=kafka.replication_factor,
            tenants=tenants,
            scheduled=kafka.topic(SCHEDULED),
            wait_groups=kafka.topic(WAIT_GROUPS),
            wait_group_events=kafka.topic(WAIT_GROUP_EVENTS),
            late=tuple(sorted({kafka.topic(t.late_topic) for t in catalog.tables().values() if t.late_topic})),
        )

    def tenant_dead_letters(self, tenant: str) -> str:
        return f"{self.dead_letters}.{tenant}"

    @property
    def subscriptions(self) -> str:
        return self.effects.removesuffix(EFFECTS) + SUBSCRIPTIONS

    def parked(self, tenant: str, subscription: str) -> str:
        return self.effects.removesuffix(EFFECTS) + f"{PARKED}.{tenant}.{subscription}"

    @property
    def all_topics(self) -> list[str]:
        dlqs = [self.tenant_dead_letters(tenant) for tenant in sorted(self.tenants)]
        own = [self.scheduled, self.wait_groups, self.wait_group_events]
        return [*self.events.values(), self.effects, self.replies, self.dead_letters, *own, *dlqs, *self.late]

    def configs(self, topic: str) -> dict[str, str]:
        """Topic configs at creation. The producer re-reads these two from the start, so time-based
        retention would lose wait groups, and events scheduled further ahead than it; compaction keeps
        each key's last command."""
        return {"cleanup.policy": "compact"} if topic in (self.scheduled, self.wait_groups) else {}

    def routes(self, schemas: SchemaSet) -> Routes:
        return Routes(self.events, self.scheduled, self.wait_group_events, schemas["event"], schemas["command"])

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
            [
                NewTopic(name, topology.partitions, topology.replication_factor, topic_configs=topology.configs(name))
                for name in wanted
            ]
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


async def ensure_topic(
    bootstrap: str, name: str, partitions: int, replication_factor: int, config: dict[str, str] | None = None
) -> None:
    """Create one topic if it is missing (with topic `config`, such as compaction)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, client_id="sluice-admin")
    await admin.start()
    try:
        response = await admin.create_topics([NewTopic(name, partitions, replication_factor, topic_configs=config)])
        for result in response.to_object()["topic_errors"]:
            if result["error_code"] not in (0, TOPIC_ALREADY_EXISTS):
                raise ConfigError(f"cannot create Kafka topic {name}: {result['error_message']}", field=result["topic"])
        await _describe_when_ready(admin, [name])
    finally:
        await admin.close()
