"""The first stage of `sluice deliver`: each matching record appended to its webhook subscriptions' queue topics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import ConsumerRecord

from app.avro.schemas import SchemaSet
from app.core.subscription import Subscription
from app.delivery.payload import dumps, record_json
from app.delivery.queues import GENERATION_HEADER, ID_HEADER, Queues
from app.delivery.registry import Registry
from app.delivery.signature import delivery_id
from app.delivery.webhook import body_of
from app.errors import SchemaError, Unavailable
from app.kafka import fetch_sessions
from app.kafka.batches import Item, send_batches
from app.kafka.topology import Topology
from app.observability.tracing import TRACEPARENT, TRACESTATE
from app.settings import Settings

log = logging.getLogger(__name__)
TRACE_HEADERS = frozenset({TRACEPARENT, TRACESTATE})
ROUTE_GROUP = "deliver"
MAX_RECORDS = 5000  # per fetched batch: its appends are acknowledged together before its offsets are committed

Message: TypeAlias = ConsumerRecord[bytes, bytes]
Index: TypeAlias = dict[str, dict[str, list[Subscription]]]  # stream -> tenant -> webhook subscriptions


class Router:
    """One consumer group over `effects` and every event topic.

    For each record and each webhook subscription it matches (made before the record was
    written; disabled ones too, so that what arrives meanwhile waits for them), the delivery
    (its exact body, id and the subscription's generation) is appended to that subscription's
    queue topic, in the partition of the source's number, under the source's key: a user's
    deliveries stay in order. A fetched batch's appends are acknowledged by Kafka before its
    source offsets are committed: at least once.
    """

    def __init__(
        self, settings: Settings, topology: Topology, schemas: SchemaSet, registry: Registry, queues: Queues
    ) -> None:
        self._schemas = schemas
        self._registry = registry
        self._queues = queues
        self._stream_of = {topology.effects: "effects"} | {name: "events" for name in topology.events.values()}
        self._index: Index = {}
        self._stale = True
        registry.watch(self._changed)
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap,
            group_id=settings.kafka.topic(f"{settings.worker.app_id}-{ROUTE_GROUP}"),
            enable_auto_commit=False,
            # A new group starts at the oldest record; subscriptions skip what predates them.
            auto_offset_reset="earliest",
            session_timeout_ms=int(settings.worker.session_timeout_s * 1000),
            fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        )
        fetch_sessions.attach(self._consumer)  # it reads many partitions, few of them busy at a time
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.kafka.bootstrap, acks="all", enable_idempotence=True
        )

    def _changed(self) -> None:
        self._stale = True

    async def run(self, stop: asyncio.Event) -> None:
        await self._producer.start()
        await self._consumer.start()
        self._consumer.subscribe(list(self._stream_of))
        try:
            while not stop.is_set():
                batch = await self._consumer.getmany(timeout_ms=200, max_records=MAX_RECORDS)
                if not batch:
                    continue
                # A subscription created before a record was written must see it.
                await self._synced()
                try:
                    await self._route(batch)
                except KafkaError as exc:  # not all appended: the whole batch again, in a moment
                    log.warning("appending deliveries failed (%r); routing the batch again", exc)
                    await asyncio.sleep(1)
                    for tp, messages in batch.items():
                        with contextlib.suppress(IllegalStateError):  # taken away: its next owner routes it
                            self._consumer.seek(tp, messages[0].offset)
                    continue
                offsets = {tp: messages[-1].offset + 1 for tp, messages in batch.items()}
                try:
                    await self._consumer.commit(offsets)
                except CommitFailedError as exc:  # taken away meanwhile: its new owner routes it again
                    log.warning("routed records not committed (%s); they are routed again", exc)
        finally:
            await self._consumer.stop()
            await self._producer.stop()

    async def _synced(self) -> None:
        while True:
            try:
                return await self._registry.sync()
            except (Unavailable, KafkaError) as exc:
                log.warning("subscriptions not up to date (%s); waiting", exc)
                await asyncio.sleep(1)

    def _subscriptions(self) -> Index:
        if self._stale:
            index: Index = {}
            for sub in self._registry.webhooks():
                index.setdefault(sub.stream, {}).setdefault(sub.tenant, []).append(sub)
            self._index, self._stale = index, False
        return self._index

    async def _route(self, batch: dict[TopicPartition, list[Message]]) -> None:
        index = self._subscriptions()
        appends: dict[tuple[str, int], list[Item]] = {}
        for tp, messages in batch.items():
            stream = self._stream_of[tp.topic]
            by_tenant = index.get(stream)
            if not by_tenant:
                continue
            for message in messages:
                try:
                    _, record = self._schemas.decode(message.value)
                except SchemaError:
                    continue  # the worker dead-letters undecodable records; nothing to push
                subs = by_tenant.get(record.get("tenant"))  # type: ignore[arg-type]
                if not subs:
                    continue
                document: bytes | None = None
                traced = [(name, value) for name, value in message.headers if name in TRACE_HEADERS]
                for sub in subs:
                    if message.timestamp < sub.created_ms or not sub.matches(record):
                        continue
                    if document is None:  # one record's JSON, shared by every subscription it goes to
                        document = dumps(record_json(stream, record))
                    topic = self._queues.topic(sub)
                    if not self._queues.ready(topic):
                        await self._queues.ensure(topic)
                    source = (message.topic, message.partition, message.offset)
                    delivery = delivery_id(sub.key, *source)
                    body = body_of(sub, *source, record, document=document, delivery=delivery)
                    headers = [(ID_HEADER, delivery.encode()), (GENERATION_HEADER, str(sub.created_ms).encode())]
                    headers += traced  # the record's trace goes on to the webhook's POST
                    appends.setdefault((topic, message.partition), []).append((message.key or b"", body, headers))
        if appends:
            await asyncio.gather(*await send_batches(self._producer, appends))
