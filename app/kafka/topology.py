"""The Kafka topics a deployment uses, named in one place, and their creation."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
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
UNKNOWN_TOPIC = 3
# Subscriptions created over HTTP (compacted, key tenant:name); `parked.<tenant>.<name>` holds a
# webhook subscription's deliveries that failed for good, until an operator replays them.
SUBSCRIPTIONS = "subscriptions"
PARKED = "parked"
# `deliveries.<tenant>.<name>`: a webhook subscription's own queue of deliveries (the exact bodies), so
# that its failures hold back only itself.
DELIVERIES = "deliveries"
# What tenants are told about their subscriptions (JSON, keyed '<tenant>:<subscription>'): disabled, enabled.
NOTICES = "notices"
# Pull subscriptions' locks, acks and nacks (compacted, one partition), keyed '<tenant>:<subscription>:<event id>'.
PULLS = "pulls"
MIN_INSYNC = "min.insync.replicas"
# Kafka's config sources (DescribeConfigs v1+): 1 is a value set on the topic itself.
DYNAMIC_TOPIC_CONFIG = 1


@dataclass(frozen=True, slots=True)
class Replication:
    """Copies of each partition of Sluice's topics (`factor`), and copies a write needs before it is acknowledged."""

    factor: int
    min_insync: int

    @classmethod
    def resolve(cls, factor: int, min_insync: int, brokers: int) -> Replication:
        """The settings' values for a cluster of `brokers` brokers; 0 is automatic.

        Automatic: a factor of 3, or the broker count if fewer, and min.insync.replicas one less
        than the factor, at least 1. Three copies with two in sync keep every acknowledged write
        through the loss of any one broker, and writes go on while one is down.
        """
        factor = factor or max(1, min(3, brokers))
        min_insync = min_insync or max(1, factor - 1)
        if min_insync > factor:
            raise ConfigError(
                f"SLUICE_MIN_INSYNC_REPLICAS is {min_insync} but topics get {factor} replicas "
                f"(the cluster has {brokers} brokers): every write would be refused",
                field="SLUICE_MIN_INSYNC_REPLICAS",
            )
        return cls(factor, min_insync)

    def matches(self, factor: int, min_insync: int) -> bool:
        """Are these settings' values (0: automatic) this replication?"""
        return factor in (0, self.factor) and min_insync in (0, self.min_insync)


@dataclass(frozen=True, slots=True)
class Topology:
    """Kafka topic names, already inside the deployment's namespace."""

    events: Mapping[str, str]  # topic slug -> Kafka topic
    effects: str
    replies: str
    dead_letters: str
    partitions: int
    replication_factor: int  # 0: automatic (Replication.resolve)
    tenants: frozenset[str] = frozenset()
    min_insync_replicas: int = 0  # 0: automatic
    scheduled: str = SCHEDULED
    wait_groups: str = WAIT_GROUPS
    wait_group_events: str = WAIT_GROUP_EVENTS
    late: tuple[str, ...] = ()  # late topics of windowed tables
    notices: str = NOTICES

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
            min_insync_replicas=kafka.min_insync_replicas,
            scheduled=kafka.topic(SCHEDULED),
            wait_groups=kafka.topic(WAIT_GROUPS),
            wait_group_events=kafka.topic(WAIT_GROUP_EVENTS),
            late=tuple(sorted({kafka.topic(t.late_topic) for t in catalog.tables().values() if t.late_topic})),
            notices=kafka.topic(NOTICES),
        )

    def with_replication(self, replication: Replication) -> Topology:
        """This topology with its automatic replication settings made concrete."""
        return dataclasses.replace(
            self, replication_factor=replication.factor, min_insync_replicas=replication.min_insync
        )

    def tenant_dead_letters(self, tenant: str) -> str:
        return f"{self.dead_letters}.{tenant}"

    @property
    def subscriptions(self) -> str:
        return self.effects.removesuffix(EFFECTS) + SUBSCRIPTIONS

    @property
    def pulls(self) -> str:
        return self.effects.removesuffix(EFFECTS) + PULLS

    def parked(self, tenant: str, subscription: str) -> str:
        return self.effects.removesuffix(EFFECTS) + f"{PARKED}.{tenant}.{subscription}"

    def deliveries(self, tenant: str, subscription: str) -> str:
        return self.effects.removesuffix(EFFECTS) + f"{DELIVERIES}.{tenant}.{subscription}"

    def made_on_demand(self, topic: str) -> bool:
        """Is this one of the topics Sluice creates when first needed (ensure_topic), not at start?"""
        prefixes = (self.parked("", "").removesuffix("."), self.deliveries("", "").removesuffix("."))
        return topic in (self.subscriptions, self.pulls) or topic.startswith(prefixes)

    @property
    def all_topics(self) -> list[str]:
        dlqs = [self.tenant_dead_letters(tenant) for tenant in sorted(self.tenants)]
        own = [self.scheduled, self.wait_groups, self.wait_group_events, self.notices]
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


# What ensure_topics resolved in this process, per bootstrap: a topic made later (a subscription's
# parked deliveries) gets the same replication, even if a broker is down when it is made.
_resolved: dict[str, Replication] = {}


async def ensure_topics(bootstrap: str, topology: Topology, *, prefixes: Iterable[str] = ()) -> Replication:
    """Create missing topics; check the existing ones; return the replication Sluice's topics get.

    Every event topic, the effects topic and the worker's tables share one partition
    count, so one user's partition number is the same everywhere (co-partitioning): a topic
    with another count is refused. Topics with fewer replicas than wanted are refused too
    (only a partition reassignment adds replicas); a min.insync.replicas below the wanted one is
    raised. Besides the topology's topics, the ones made on demand and those whose names start
    with one of `prefixes` (the worker's faust topics) are checked, when they exist.
    """
    admin = await _admin(bootstrap)
    try:
        wanted = topology.all_topics
        starts = tuple(prefixes)
        existing = {d["topic"]: d for d in await admin.describe_topics() if d["error_code"] == 0}
        others = sorted(
            name
            for name in existing
            if name not in wanted and (topology.made_on_demand(name) or (starts and name.startswith(starts)))
        )
        ours = [existing[name] for name in [*wanted, *others] if name in existing]
        brokers = await _brokers(admin, ours)
        replication = Replication.resolve(topology.replication_factor, topology.min_insync_replicas, brokers)
        _resolved[bootstrap] = replication
        log.info(
            "Kafka has %d brokers: Sluice's topics get %d replicas, min.insync.replicas %d",
            brokers,
            replication.factor,
            replication.min_insync,
        )
        missing = [(name, topology.partitions, topology.configs(name)) for name in wanted if name not in existing]
        made = await _create(admin, missing, replication)
        described = await _describe_when_ready(admin, wanted)
        for found in described:
            count = len(found["partitions"])
            if count != topology.partitions:
                raise ConfigError(
                    f"Kafka topic {found['topic']} has {count} partitions, Sluice is set to "
                    f"{topology.partitions} (SLUICE_PARTITIONS); they must match",
                    field="SLUICE_PARTITIONS",
                )
        # The topics made here have what was asked for; any other may not (one another process made
        # a moment ago included, which the broker that listed the topics may not have known yet).
        before = [found for found in described if found["topic"] not in made]
        await _check_replication(admin, [*before, *(existing[name] for name in others)], replication)
    finally:
        await admin.close()
    return replication


async def ensure_topic(
    bootstrap: str,
    name: str,
    partitions: int,
    replication_factor: int,
    config: dict[str, str] | None = None,
    *,
    min_insync_replicas: int = 0,
) -> None:
    """Create one topic if it is missing (with topic `config`, such as compaction).

    A replication of 0 (automatic, the settings' default) is what ensure_topics resolved in this
    process, so the deployment's own; without one, it is resolved here.
    """
    admin = await _admin(bootstrap)
    try:
        known = _resolved.get(bootstrap)
        if known is not None and known.matches(replication_factor, min_insync_replicas):
            replication = known
        else:
            brokers = await _brokers(admin, [])
            replication = Replication.resolve(replication_factor, min_insync_replicas, brokers)
        await _create(admin, [(name, partitions, dict(config or {}))], replication)
        await _describe_when_ready(admin, [name])
    finally:
        await admin.close()


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
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
    return admin


async def _brokers(admin: AIOKafkaAdminClient, described: Iterable[Any]) -> int:
    """The cluster's brokers: those in its metadata, and those that hold replicas of `described` topics.

    A broker that is down is missing from the metadata; counted alone, the others would make
    new topics with fewer replicas than the existing ones have, and the next start would refuse them.
    """
    ids = {broker["node_id"] for broker in (await admin.describe_cluster())["brokers"]}
    ids.update(node for topic in described for partition in topic["partitions"] for node in partition["replicas"])
    return len(ids)


async def _create(
    admin: AIOKafkaAdminClient, topics: list[tuple[str, int, dict[str, str]]], replication: Replication
) -> set[str]:
    """Create these topics (name, partitions, configs) unless they exist; the names of those it made."""
    made: set[str] = set()
    if not topics:
        return made
    response = await admin.create_topics(
        [
            NewTopic(name, partitions, replication.factor, topic_configs={MIN_INSYNC: str(replication.min_insync), **c})
            for name, partitions, c in topics
        ]
    )
    for result in response.to_object()["topic_errors"]:
        if result["error_code"] not in (0, TOPIC_ALREADY_EXISTS):
            raise ConfigError(
                f"cannot create Kafka topic {result['topic']}: {result['error_message']}", field=result["topic"]
            )
        if result["error_code"] == 0:
            made.add(result["topic"])
            log.info(
                "created Kafka topic %s (%d replicas, min.insync.replicas %d)",
                result["topic"],
                replication.factor,
                replication.min_insync,
            )
    return made


async def _check_replication(admin: AIOKafkaAdminClient, described: list[Any], replication: Replication) -> None:
    """Refuse topics with fewer replicas than wanted; raise a min.insync.replicas below the wanted one."""
    short = {
        found["topic"]: min(len(partition["replicas"]) for partition in found["partitions"])
        for found in described
        if found["partitions"]
    }
    short = {topic: copies for topic, copies in short.items() if copies < replication.factor}
    for topic, copies in sorted(short.items()):
        log.warning("Kafka topic %s has replication factor %d, Sluice wants %d", topic, copies, replication.factor)
    if short:
        topic, copies = min(short.items())
        more = f" (and {len(short) - 1} more topics)" if len(short) > 1 else ""
        raise ConfigError(
            f"Kafka topic {topic}{more} has replication factor {copies}, Sluice wants {replication.factor} "
            "(SLUICE_REPLICATION_FACTOR; 0 is 3, or the broker count if fewer). Sluice cannot add replicas to "
            "an existing topic: add them with kafka-reassign-partitions.sh (a plan listing "
            f"{replication.factor} brokers for each partition), or, to run with fewer copies, set "
            f"SLUICE_REPLICATION_FACTOR={copies}",
            field=topic,
        )
    topics = [found["topic"] for found in described]
    if not topics:
        return
    raised = []
    for resource in await _topic_configs(admin, topics):
        name = resource["resource_name"]
        if resource["error_code"] != 0:
            raise ConfigError(f"cannot read the configs of Kafka topic {name}: {resource['error_message']}", field=name)
        current = {entry["config_names"]: entry for entry in resource["config_entries"]}
        in_sync = current.get(MIN_INSYNC)
        if in_sync is None or in_sync["config_value"] is None or int(in_sync["config_value"]) >= replication.min_insync:
            continue
        # AlterConfigs (aiokafka has no incremental one) resets every config it is not given, so
        # the topic's own settings (compaction, retention) go along unchanged.
        own = {entry["config_names"]: entry["config_value"] for entry in current.values() if _set_on_topic(entry)}
        if any(value is None for value in own.values()):
            raise ConfigError(
                f"Kafka topic {name} has min.insync.replicas {in_sync['config_value']}, Sluice wants "
                f"{replication.min_insync}, and it has hidden configs Sluice cannot keep: set it with kafka-configs.sh",
                field=name,
            )
        own[MIN_INSYNC] = str(replication.min_insync)
        raised.append((name, in_sync["config_value"], ConfigResource(ConfigResourceType.TOPIC, name, own)))
    if not raised:
        return
    for response in await admin.alter_configs([resource for _, _, resource in raised]):
        for result in response.to_object()["resources"]:
            if result["error_code"] != 0:
                raise ConfigError(
                    f"cannot raise min.insync.replicas of Kafka topic {result['resource_name']}: "
                    f"{result['error_message']}",
                    field=result["resource_name"],
                )
    for name, was, _ in raised:
        log.warning("raised min.insync.replicas of Kafka topic %s from %s to %d", name, was, replication.min_insync)


async def _topic_configs(admin: AIOKafkaAdminClient, topics: list[str], timeout: float = 5.0) -> list[Any]:
    """The configs of `topics`, asked again while a broker does not know one yet (a topic made a moment ago)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name) for name in topics])
        resources = [resource for response in responses for resource in response.to_object()["resources"]]
        unknown = any(resource["error_code"] == UNKNOWN_TOPIC for resource in resources)
        if not unknown or asyncio.get_running_loop().time() > deadline:
            return resources
        await asyncio.sleep(0.1)


def _set_on_topic(entry: Mapping[str, Any]) -> bool:
    # DescribeConfigs v0 says is_default; v1 and later say where the value comes from.
    if "config_source" in entry:
        return bool(entry["config_source"] == DYNAMIC_TOPIC_CONFIG)
    return not entry["is_default"]


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
