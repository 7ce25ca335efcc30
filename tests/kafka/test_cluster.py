"""A local 3-node KRaft cluster: replicated topics, no acknowledged event lost or doubled, endpoints back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.catalog import Catalog
from app.errors import ConfigError
from app.kafka.launcher import LocalCluster
from app.kafka.topology import Topology, ensure_topics
from app.settings import Settings
from tests.support.stack import SCHEMAS, Stack, free_port, new_namespace

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

REPO = Path(__file__).resolve().parents[2]
SEEDS = REPO / "tests" / "producer" / "seeds"
KEY = "cluster_key"
BACK_WITHIN_S = 30.0  # every endpoint answers 2xx this soon after the cluster is back


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    folder = tmp_path_factory.mktemp("cluster")
    cluster = LocalCluster(
        home=Settings.from_env().kafka.home,
        data_dir=folder / "data",
        ports=[free_port() for _ in range(3)],
        controller_ports=[free_port() for _ in range(3)],
        log_dir=folder,
    )
    cluster.start()
    try:
        asyncio.run(cluster.wait_ready(timeout=120))
        yield cluster
    finally:
        cluster.stop()


class Admin:
    """An admin client for one block of a test."""

    def __init__(self, bootstrap: str) -> None:
        self.client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)

    async def __aenter__(self) -> AIOKafkaAdminClient:
        await self.client.start()
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.close()


async def settled(admin: AIOKafkaAdminClient, topics: list[str], timeout: float = 60.0) -> list[Any]:
    """Describe `topics` once every partition of each has a leader and all its replicas in sync."""
    deadline = time.monotonic() + timeout
    while True:
        described: list[Any] = await admin.describe_topics(topics)
        if all(
            d["error_code"] == 0
            and d["partitions"]
            and all(p["leader"] >= 0 and len(p["isr"]) == len(p["replicas"]) for p in d["partitions"])
            for d in described
        ):
            return described
        assert time.monotonic() < deadline, f"partitions not in sync within {timeout:g}s: {described}"
        await asyncio.sleep(0.25)


async def min_insync(admin: AIOKafkaAdminClient, topics: list[str]) -> dict[str, str]:
    responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, t) for t in topics])
    found = {}
    for response in responses:
        for resource in response.to_object()["resources"]:
            entries = {e["config_names"]: e["config_value"] for e in resource["config_entries"]}
            found[resource["resource_name"]] = f"{entries.get('min.insync.replicas')}/{entries.get('cleanup.policy')}"
    return found


def deployment(bootstrap: str) -> tuple[Settings, Topology]:
    settings = Settings.from_env({"SLUICE_NAMESPACE": new_namespace(), "SLUICE_KAFKA_BOOTSTRAP_SERVERS": bootstrap})
    return settings, Topology.of(settings.kafka, Catalog.load(REPO / "topics"))


async def test_the_start_up_check_refuses_missing_replicas_and_raises_min_insync(cluster: LocalCluster) -> None:
    _, refused_topology = deployment(cluster.bootstrap)
    fixed_settings, fixed_topology = deployment(cluster.bootstrap)
    changelog = f"{fixed_settings.group_id}-ledger-changelog"
    async with Admin(cluster.bootstrap) as admin:
        single = NewTopic(refused_topology.effects, 4, 1)
        lax = NewTopic(changelog, 4, 3, topic_configs={"cleanup.policy": "compact", "min.insync.replicas": "1"})
        await admin.create_topics([single, lax])
        await settled(admin, [refused_topology.effects, changelog])
        with pytest.raises(ConfigError) as refused:
            await ensure_topics(cluster.bootstrap, refused_topology)
        assert refused.value.field == refused_topology.effects
        assert "replication factor 1, Sluice wants 3" in refused.value.message
        assert "kafka-reassign-partitions" in refused.value.message
        # A min.insync.replicas below the wanted one is raised, and the topic keeps its other configs.
        replication = await ensure_topics(cluster.bootstrap, fixed_topology, prefixes=[fixed_settings.group_id + "-"])
        assert (replication.factor, replication.min_insync) == (3, 2)
        # Every broker learns of the change from the metadata log, a moment later.
        deadline = time.monotonic() + 10
        while (found := await min_insync(admin, [changelog])) != {changelog: "2/compact"}:
            assert time.monotonic() < deadline, found
            await asyncio.sleep(0.1)


# --- the steady load: pub/sub events with ids, each retried with the same id until acknowledged ---


@dataclass
class Load:
    """Clients each posting one event at a time to `orders`, retrying a 503 with the same Idempotency-Key."""

    url: str
    sent: Counter[str] = field(default_factory=Counter)  # attempts per id: each may have written it
    acked: set[str] = field(default_factory=set)
    unexpected: list[str] = field(default_factory=list)
    stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def client(self, n: int) -> None:
        timeout = aiohttp.ClientTimeout(total=20)  # longer than the producer's 10 s wait for Kafka's ack
        async with aiohttp.ClientSession(timeout=timeout) as http:
            i = 0
            while not self.stopping.is_set():
                await self.deliver(http, f"c{n}-{i}", {"data": {"user_id": f"u{n}-{i % 10}", "n": i}})
                i += 1
                await asyncio.sleep(0.05)

    async def deliver(self, http: aiohttp.ClientSession, event_id: str, body: dict[str, Any]) -> None:
        headers = {"X-API-Key": KEY, "Idempotency-Key": event_id, "Content-Type": "application/json"}
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            self.sent[event_id] += 1
            try:
                async with http.post(f"{self.url}/topics/orders/events", data=orjson.dumps(body), headers=headers) as r:
                    status = r.status
            except (aiohttp.ClientError, TimeoutError):
                status = 0  # not confirmed: the same as a 503
            if status == 201:
                self.acked.add(event_id)
                return
            if status not in (0, 503):
                self.unexpected.append(f"{event_id}: {status}")
                return
            await asyncio.sleep(0.2)
        self.unexpected.append(f"{event_id}: never acknowledged")


# --- every endpoint, one request each: the six dialects, a state read, and health ---


def seed(name: str) -> bytes:
    return (SEEDS / name).read_bytes()


Endpoint = tuple[str, str, Callable[[], bytes], dict[str, str], Callable[[int], bool]]


def two_xx(status: int) -> bool:
    return 200 <= status < 300


def endpoints() -> dict[str, Endpoint]:
    """name -> (method, path, body, extra headers, answered): each endpoint and what counts as answered."""

    def gamification() -> bytes:
        return orjson.dumps({"event_id": f"g-{uuid.uuid4().hex[:8]}", "user_id": "player", "type": "daily_login"})

    cloudevent = {"specversion": "1.0", "id": "probe", "source": "/cluster", "type": "order_placed", "subject": "u"}
    return {
        # 200 with the effect, not 202: the worker is back and the producer reads its replies.
        "gamification (synchronous)": ("POST", "/api/v1/events", gamification, {}, lambda s: s == 200),
        "usage": ("PUT", "/events", lambda: seed("usage.json"), {}, two_xx),
        "analytics": ("POST", "/ingest", lambda: seed("analytics.json"), {}, two_xx),
        "pub/sub": ("POST", "/topics/orders/events", lambda: b'{"data": {"user_id": "probe"}}', {}, two_xx),
        "segment": ("POST", "/api/events", lambda: seed("segment.json"), {}, two_xx),
        "cloudevents": (
            "POST",
            "/cloudevents/orders",
            lambda: orjson.dumps(cloudevent),
            {"Content-Type": "application/cloudevents+json"},
            two_xx,
        ),
        "scheduled": ("GET", "/scheduled", lambda: b"", {}, two_xx),
        "health": ("GET", "/health", lambda: b"", {}, two_xx),
    }


async def answered_within(url: str, since: float, within: float) -> dict[str, float]:
    """Call every endpoint until it answers; the seconds after `since` each took. Fails past `within`."""
    last: dict[str, str] = {}

    async def until_answered(name: str, endpoint: Endpoint) -> tuple[str, float]:
        method, path, body, extra, ok = endpoint
        headers = {"X-API-Key": KEY, "Content-Type": "application/json", **extra}
        async with aiohttp.ClientSession() as http:
            while (left := since + within - time.monotonic()) > 0:
                try:
                    timeout = aiohttp.ClientTimeout(total=left)
                    async with http.request(method, url + path, data=body(), headers=headers, timeout=timeout) as r:
                        last[name] = f"{r.status} {(await r.read())[:200]!r}"
                        if ok(r.status):
                            return name, time.monotonic() - since
                except (aiohttp.ClientError, TimeoutError) as exc:
                    last[name] = repr(exc)
                await asyncio.sleep(0.25)
        return name, float("inf")

    calls = [until_answered(name, endpoint) for name, endpoint in endpoints().items()]
    took = dict(await asyncio.gather(*calls))
    late = {name: last.get(name) for name, seconds in took.items() if seconds > within}
    assert not late, f"not answered within {within:g}s of the cluster being back: {late}"
    return took


# --- reading back ---


async def ids_on(bootstrap: str, topic: str, timeout: float = 60.0) -> Counter[str]:
    """Every event id on `topic`, counted, read from the beginning to the end as it is now."""
    async with Admin(bootstrap) as admin:
        (described,) = await admin.describe_topics([topic])
    parts = [TopicPartition(topic, p["partition"]) for p in described["partitions"]]
    assert parts, f"{topic} has no partitions"
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    ids: Counter[str] = Counter()
    try:
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        deadline = time.monotonic() + timeout
        while [tp for tp in parts if await consumer.position(tp) < ends[tp]]:
            assert time.monotonic() < deadline, f"{topic} not read to its end within {timeout:g}s"
            batch = await consumer.getmany(timeout_ms=1000)
            for messages in batch.values():
                ids.update(SCHEMAS.decode(m.value)[1]["id"] for m in messages)
    finally:
        await consumer.stop()
    return ids


async def the_leader_of(admin: AIOKafkaAdminClient, topic: str) -> int:
    described = await settled(admin, [topic])
    return int(next(p["leader"] for p in described[0]["partitions"] if p["partition"] == 0))


async def while_loading(seconds: float, load: Load) -> None:
    """Let the load run for `seconds`; fail early if a client got an answer other than 201 or 503."""
    await asyncio.sleep(seconds)
    assert not load.unexpected, load.unexpected[:10]


async def test_no_acknowledged_event_is_lost_or_doubled_and_every_endpoint_comes_back(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    stack = Stack.create(cluster.bootstrap, tmp_path, api_keys=f"{KEY}:acme")
    load = Load(stack.url)
    clients: list[asyncio.Task[None]] = []
    timings: dict[str, float] = {}
    try:
        await stack.start_producer(timeout=90)
        stack.start("worker")
        started = time.monotonic()
        await answered_within(stack.url, started, 90)  # the worker has joined and answers
        timings["stack ready"] = time.monotonic() - started
        clients = [asyncio.create_task(load.client(n)) for n in range(3)]
        await while_loading(3, load)

        # One node crashes under load, then comes back and catches up.
        async with Admin(cluster.bootstrap) as admin:
            events = stack.topic("events.orders")
            node = cluster.nodes[await the_leader_of(admin, events) - 1]
            node.kill()
            await while_loading(5, load)
            node.start()
            await node.wait_ready(timeout=90)
            ours = [t for t in await admin.list_topics() if t.startswith(stack.namespace + ".")]
            await settled(admin, ours, timeout=90)
        await while_loading(2, load)

        # Every node stops, and the cluster starts again; the producer and the worker stay up.
        # By now nobody has waited for a synchronous answer for well over the producer's 10 s,
        # so its replies reader is paused, and must find the partitions' new leaders when woken.
        restarting = time.monotonic()
        await asyncio.to_thread(cluster.stop)
        cluster.start()
        await cluster.wait_ready(timeout=120)
        back = time.monotonic()
        timings["full restart"] = back - restarting
        took = await answered_within(stack.url, back, BACK_WITHIN_S)
        timings.update({f"back: {name}": seconds for name, seconds in took.items()})
        await while_loading(2, load)
        load.stopping.set()
        await asyncio.wait_for(asyncio.gather(*clients), timeout=60)
        assert not load.unexpected, load.unexpected[:10]
        assert len(load.acked) > 100, f"only {len(load.acked)} events acknowledged"

        # Every acknowledged event is on Kafka, and once, unless its client sent it again
        # after an answer that confirmed nothing: only then may a copy exist (the worker dedupes it).
        on_kafka = await ids_on(cluster.bootstrap, stack.topic("events.orders"))
        ours_on_kafka = Counter({i: n for i, n in on_kafka.items() if i in load.sent})
        assert not load.acked - ours_on_kafka.keys(), sorted(load.acked - ours_on_kafka.keys())[:10]
        copies = {i: (n, load.sent[i]) for i, n in ours_on_kafka.items() if n > load.sent[i]}
        assert not copies, f"ids on Kafka more often than they were sent: {copies}"
        once = [i for i in load.acked if load.sent[i] == 1]
        assert all(ours_on_kafka[i] == 1 for i in once)

        # Every topic Sluice made, faust's included, has 3 replicas and min.insync.replicas 2.
        async with Admin(cluster.bootstrap) as admin:
            ours = sorted(t for t in await admin.list_topics() if t.startswith(stack.namespace + "."))
            assert any(t.endswith("-changelog") for t in ours) and any(t.endswith("__assignor-__leader") for t in ours)
            assert stack.topic("subscriptions") in ours and stack.topic("effects") in ours
            described = await admin.describe_topics(ours)
            replicas = {d["topic"]: sorted({len(p["replicas"]) for p in d["partitions"]}) for d in described}
            assert replicas == {t: [3] for t in ours}
            configs = await min_insync(admin, ours)
            assert {t: c.split("/")[0] for t, c in configs.items()} == {t: "2" for t in ours}
        print(f"\n{len(load.acked)} events acknowledged, {sum(load.sent.values())} sent; timings (s): {timings}")
    finally:
        load.stopping.set()
        for task in clients:
            task.cancel()
        await asyncio.gather(*clients, return_exceptions=True)
        stack.stop()
