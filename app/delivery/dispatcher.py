"""`sluice deliver`: push matching records to webhook subscriptions, at least once, in order per user."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord

from app.avro.schemas import SchemaSet
from app.core.subscription import Subscription
from app.delivery.parking import Parking, replay_parked
from app.delivery.registry import Registry
from app.delivery.signature import delivery_id
from app.delivery.webhook import Sender, body_of, sending
from app.deployment import Deployment
from app.errors import NotFound, SchemaError, Unavailable
from app.kafka.topology import Topology, ensure_topics
from app.settings import Settings

log = logging.getLogger(__name__)
DELIVER_GROUP = "deliver"
MAX_IN_FLIGHT = 100  # records being delivered at once, over all partitions


class Dispatcher:
    """One consumer group over `effects` and every event topic.

    Each partition's fetched records are delivered by a task of its own while the partition
    is paused: different users side by side, one user's records in offset order. The
    offset is committed only once every record of the batch was delivered or parked, so a
    failing receiver holds back that partition (and only it) while it is retried; a user's
    next record never overtakes one being retried.
    """

    def __init__(
        self, settings: Settings, topology: Topology, schemas: SchemaSet, registry: Registry, sender: Sender
    ) -> None:
        self._topology = topology
        self._schemas = schemas
        self._registry = registry
        self._sender = sender
        self._parking = Parking(settings.kafka.bootstrap, topology)
        self._stream_of = {topology.effects: "effects"} | {name: "events" for name in topology.events.values()}
        self._busy: dict[TopicPartition, asyncio.Task[int]] = {}
        # Bounds the receivers' load, and this process's open connections.
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap,
            group_id=settings.kafka.topic(f"{settings.worker.app_id}-{DELIVER_GROUP}"),
            enable_auto_commit=False,
            # A new group starts at the oldest record; subscriptions skip what predates them.
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.worker.session_timeout_s * 1000),
            fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        )

    async def run(self, stop: asyncio.Event) -> None:
        await self._parking.start()
        await self._consumer.start()
        self._consumer.subscribe(list(self._stream_of), listener=_Revoked(self))
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=200)
                if batch:
                    # A subscription created before a record was written must see it.
                    await self._synced()
                for tp, messages in batch.items():
                    self._consumer.pause(tp)
                    self._busy[tp] = asyncio.create_task(self._deliver_partition(tp, messages))
                await self._settle()
        finally:
            self.cancel(list(self._busy))
            await self._consumer.stop()
            await self._parking.stop()

    async def _synced(self) -> None:
        while True:
            try:
                return await self._registry.sync()
            except (Unavailable, KafkaError) as exc:
                log.warning("subscriptions not up to date (%s); waiting", exc)
                await asyncio.sleep(1)

    def cancel(self, partitions: list[TopicPartition]) -> None:
        """Partitions taken away: stop delivering; the new owner starts at the last commit."""
        for tp in partitions:
            task = self._busy.pop(tp, None)
            if task is not None:
                task.cancel()

    async def _settle(self) -> None:
        for tp, task in list(self._busy.items()):
            if not task.done():
                continue
            del self._busy[tp]
            try:
                next_offset = task.result()
            except asyncio.CancelledError:
                continue
            except Exception:
                # Not committed: seek back so that the partition is delivered again.
                log.exception("delivery on %s failed; retrying the batch", tp)
                self._consumer.seek(tp, await self._consumer.committed(tp) or 0)
                self._consumer.resume(tp)
                continue
            await self._consumer.commit({tp: next_offset})
            self._consumer.resume(tp)

    async def _deliver_partition(self, tp: TopicPartition, messages: list[ConsumerRecord[bytes, bytes]]) -> int:
        """Deliver a partition's batch: users side by side, each user's records one after another."""
        by_user: dict[bytes | None, list[ConsumerRecord[bytes, bytes]]] = {}
        for message in messages:
            by_user.setdefault(message.key, []).append(message)
        await asyncio.gather(*(self._deliver_in_order(tp, mine) for mine in by_user.values()))
        next_offset: int = messages[-1].offset + 1
        return next_offset

    async def _deliver_in_order(self, tp: TopicPartition, messages: list[ConsumerRecord[bytes, bytes]]) -> None:
        stream = self._stream_of[tp.topic]
        for message in messages:
            try:
                _, record = self._schemas.decode(message.value)
            except SchemaError:
                continue  # the worker dead-letters undecodable records; nothing to push
            subs = [
                sub
                for sub in self._registry.webhooks()
                if sub.stream == stream and message.timestamp >= sub.created_ms and sub.matches(record)
            ]
            if subs:
                async with self._in_flight:
                    await asyncio.gather(*(self._deliver(sub, message, record) for sub in subs))

    async def _deliver(
        self, sub: Subscription, message: ConsumerRecord[bytes, bytes], record: dict[str, object]
    ) -> None:
        delivery = delivery_id(sub.key, message.topic, message.partition, message.offset)
        body = body_of(sub, message.topic, message.partition, message.offset, record)
        failure = await self._sender.deliver(sub, delivery, body)
        if failure is not None:
            await self._parking.park(sub, message.key, delivery, body, failure)


class _Revoked(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._dispatcher.cancel(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        return None


async def run(settings: Settings) -> int:
    deployment = Deployment.load(settings)
    await ensure_topics(settings.kafka.bootstrap, deployment.topology)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    registry = Registry.of(deployment)
    await registry.start()
    try:
        # Each attempt signs with the secrets in force then, should the subscription's be rotated meanwhile.
        async with sending(settings.delivery, current=lambda sub: registry.get(sub.tenant, sub.name) or sub) as sender:
            dispatcher = Dispatcher(settings, deployment.topology, deployment.schemas, registry, sender)
            log.info("delivering to webhooks")
            await dispatcher.run(stop)
    finally:
        with contextlib.suppress(Exception):
            await registry.stop()
    return 0


async def replay_command(settings: Settings, tenant: str, name: str) -> int:
    """`sluice replay TENANT NAME`: prints {"replayed", "parked"}; exit 1 if some stay parked."""
    deployment = Deployment.load(settings)
    registry = Registry.of(deployment)
    await registry.start()
    try:
        sub = registry.get(tenant, name)
        if sub is None or sub.url is None:
            raise NotFound(f"tenant {tenant!r} has no webhook subscription {name!r}", field="subscription")
        result = await replay_parked(deployment, sub)
    finally:
        await registry.stop()
    print(orjson.dumps(result).decode())
    return 1 if result["parked"] else 0
