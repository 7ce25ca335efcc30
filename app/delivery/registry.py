"""Every subscription, in memory in each process: declared ones from topic files, the rest from Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from app.avro.schemas import Schema
from app.core.subscription import Subscription
from app.delivery.payload import dumps
from app.deployment import Deployment
from app.errors import Conflict, NotFound, SchemaError, Unavailable, ValidationError
from app.kafka.topology import ensure_topic
from app.runtime import tasks

log = logging.getLogger(__name__)


class Registry:
    """Follows the compacted subscriptions topic (key `tenant:name`, a tombstone deletes).

    Every server and dispatcher process reads the whole topic at start and then follows
    it, so a subscription created on one process is seen by all. Writes wait until this
    process has read them back: a client that created a subscription can use it at once.
    A subscription declared in a topic file may have a record there too, holding only
    whether it is enabled.
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        schema: Schema,
        declared: Iterable[Subscription],
        replication_factor: int = 1,
        notices: str | None = None,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._notices = notices
        self._partition = TopicPartition(topic, 0)
        self._schema = schema
        self._replication_factor = replication_factor
        self._declared = {sub.key: sub for sub in declared}
        self._created: dict[str, Subscription] = {}
        self._states: dict[str, Subscription] = {}  # declared subscriptions' records: their enabled state
        self._all: dict[str, Subscription] = dict(self._declared)
        self._webhooks: list[Subscription] = [sub for sub in self._declared.values() if sub.url is not None]
        self._watchers: list[Callable[[], None]] = []
        self._position = 0
        self._advanced = asyncio.Condition()
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        # Asks for the topic's end on a connection of its own: on the reader's, the question would wait
        # behind its fetch, which the broker holds up to fetch_max_wait_ms when there is nothing new.
        self._ends = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._producer: AIOKafkaProducer | None = None
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    def of(cls, deployment: Deployment) -> Registry:
        return cls(
            deployment.settings.kafka.bootstrap,
            deployment.topology.subscriptions,
            deployment.schemas["subscription"],
            deployment.catalog.subscriptions,
            deployment.topology.replication_factor,
            deployment.topology.notices,
        )

    async def start(self) -> None:
        # One partition: a total order of changes, and the topic is small.
        await ensure_topic(self._bootstrap, self._topic, 1, self._replication_factor, {"cleanup.policy": "compact"})
        await self._consumer.start()
        await self._ends.start()
        self._consumer.assign([self._partition])
        await self._consumer.seek_to_beginning(self._partition)
        self._reader = asyncio.create_task(self._read(), name="sluice-subscriptions")
        await self.sync()

    async def stop(self) -> None:
        await tasks.stop(self._reader)
        await self._consumer.stop()
        await self._ends.stop()
        if self._producer is not None:
            await self._producer.stop()

    async def sync(self, timeout: float = 10.0) -> None:
        """Wait until every change written so far anywhere is applied here."""
        try:
            end = (await self._ends.end_offsets([self._partition]))[self._partition]
        except KafkaError as exc:
            raise Unavailable(f"cannot read subscriptions from Kafka ({exc}); retry later") from exc
        await self._reach(end, timeout)

    def get(self, tenant: str, name: str) -> Subscription | None:
        return self._all.get(f"{tenant}:{name}")

    def of_tenant(self, tenant: str) -> list[Subscription]:
        return sorted((sub for sub in self._all.values() if sub.tenant == tenant), key=lambda sub: sub.name)

    def webhooks(self) -> list[Subscription]:
        """Every webhook subscription, disabled ones too."""
        return self._webhooks

    def watch(self, changed: Callable[[], None]) -> None:
        """Call `changed()` after every change read (created, deleted, disabled, enabled, rotated)."""
        self._watchers.append(changed)

    async def create(self, subscription: Subscription) -> None:
        if self.get(subscription.tenant, subscription.name) is not None:
            raise Conflict(f"subscription {subscription.name!r} exists", field="name", code="subscription_exists")
        await self._write(subscription.key, self._schema.encode(subscription.to_record()))

    async def delete(self, tenant: str, name: str) -> None:
        sub = self._made_over_http(tenant, name, "remove it there")
        await self._write(sub.key, None)

    async def rotate(self, tenant: str, name: str, secret: str, previous_until: datetime) -> Subscription:
        """Give a webhook subscription a new secret; the one it replaces still signs until `previous_until`."""
        await self.sync()  # the secret it replaces is the latest, wherever that was set
        sub = self._made_over_http(tenant, name, "change the secret in its secret_env")
        rotated = dataclasses.replace(
            sub, secret=secret, previous_secret=sub.secret, previous_secret_until=previous_until
        )
        await self._write(sub.key, self._schema.encode(rotated.to_record()))
        return rotated

    def _made_over_http(self, tenant: str, name: str, instead: str) -> Subscription:
        """The subscription, if it exists and is not declared in a topic file (there, do `instead`)."""
        sub = self.get(tenant, name)
        if sub is None:
            raise NotFound(f"no subscription named {name!r}", field="name", code="subscription_not_found")
        if sub.declared:
            raise Conflict(
                f"subscription {name!r} is declared in a topic file; {instead}",
                field="name",
                code="subscription_declared",
            )
        return sub

    async def disable(
        self, tenant: str, name: str, reason: str, failing_since: datetime | None, generation: int | None = None
    ) -> Subscription | None:
        """Disable a webhook subscription and tell its tenant (a `subscription.disabled` notice).

        `failing_since`: when its endpoint's failures began (None: disabled by hand). Only the
        subscription made at `generation` (its created_ms), if given: not one made again under
        the same name meanwhile. None if there is nothing to disable.
        """
        await self.sync()
        sub = self.get(tenant, name)
        if sub is None or sub.url is None or not sub.enabled or generation not in (None, sub.created_ms):
            return None
        now = datetime.now(UTC).replace(microsecond=0)
        disabled = dataclasses.replace(sub, enabled=False, disabled_reason=reason, disabled_at=now)
        await self._write_state(disabled)
        since = failing_since.replace(microsecond=0) if failing_since is not None else None
        notice: dict[str, object] = {"reason": reason, "failing_since": since, "at": now}
        await self._notify("subscription.disabled", disabled, notice)
        return disabled

    async def enable(self, tenant: str, name: str) -> Subscription:
        """Enable a webhook subscription again (a `subscription.enabled` notice); enabling an enabled one is a no-op."""
        await self.sync()
        sub = self.get(tenant, name)
        if sub is None:
            raise NotFound(f"no subscription named {name!r}", field="name", code="subscription_not_found")
        if sub.enabled:
            return sub
        enabled = dataclasses.replace(sub, enabled=True, disabled_reason=None, disabled_at=None)
        await self._write_state(enabled)
        await self._notify("subscription.enabled", enabled, {"at": datetime.now(UTC).replace(microsecond=0)})
        return enabled

    async def _write_state(self, sub: Subscription) -> None:
        if sub.declared:  # its definition is the topic file's: the record keeps only its state, and no secret
            sub = dataclasses.replace(sub, secret=None, previous_secret=None, previous_secret_until=None)
        await self._write(sub.key, self._schema.encode(sub.to_record()))

    async def _notify(self, kind: str, sub: Subscription, details: dict[str, object]) -> None:
        if self._notices is None:
            return
        assert self._producer is not None  # _write started it
        notice = {"type": kind, "tenant": sub.tenant, "subscription": sub.name, "topic": sub.topic, **details}
        try:
            await self._producer.send_and_wait(self._notices, dumps(notice), key=sub.key.encode())
        except Exception as exc:  # any Kafka failure: the change is made, its notice is not
            raise Unavailable("Kafka did not acknowledge the notice; the change is made") from exc

    async def _write(self, key: str, value: bytes | None) -> None:
        if self._producer is None:
            self._producer = AIOKafkaProducer(bootstrap_servers=self._bootstrap, acks="all", enable_idempotence=True)
            await self._producer.start()
        try:
            written = await self._producer.send_and_wait(self._topic, value, key=key.encode(), partition=0)
        except Exception as exc:  # any Kafka failure: the client may retry
            raise Unavailable("Kafka did not acknowledge the subscription change; retry later") from exc
        await self._reach(written.offset + 1, 10.0)

    async def _reach(self, position: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        async with self._advanced:
            while self._position < position:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable("subscriptions are not read back from Kafka in time; retry later")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._advanced.wait(), left)

    async def _read(self) -> None:
        while True:
            try:
                await self._read_some()
            except KafkaError as exc:
                # Keep following; meanwhile sync() times out and callers answer 503.
                log.warning("reading subscriptions failed (%r); retrying", exc)
                await asyncio.sleep(1)

    async def _read_some(self) -> None:
        while True:
            batch = await self._consumer.getmany(self._partition, timeout_ms=500)
            messages = batch.get(self._partition, [])
            for message in messages:
                self._apply(message.key.decode(), message.value, message.timestamp)
            if messages:
                self._changed()
            position = await self._consumer.position(self._partition)
            async with self._advanced:
                self._position = position
                self._advanced.notify_all()

    def _apply(self, key: str, value: bytes | None, timestamp: int) -> None:
        if value is None:
            self._created.pop(key, None)
            self._states.pop(key, None)
            return
        try:
            sub = Subscription.from_record(self._schema.decode(value))
        except (SchemaError, ValidationError, ValueError):  # written by a newer version, or broken
            log.warning("undecodable subscription %s skipped", key)
            return
        if sub.declared:
            self._states[key] = sub
        else:
            # A record rewritten by a rotation keeps the creation time it carries.
            self._created[key] = dataclasses.replace(sub, created_ms=sub.created_ms or timestamp)

    def _changed(self) -> None:
        declared = {key: self._with_state(sub) for key, sub in self._declared.items()}
        self._all = {**self._created, **declared}
        self._webhooks = [sub for sub in self._all.values() if sub.url is not None]
        for changed in self._watchers:
            changed()

    def _with_state(self, sub: Subscription) -> Subscription:
        state = self._states.get(sub.key)
        if state is None:
            return sub
        return dataclasses.replace(
            sub, enabled=state.enabled, disabled_reason=state.disabled_reason, disabled_at=state.disabled_at
        )
