"""`sluice deliver`: push matching records to webhook subscriptions, at least once, each subscription on its own.

Two stages in one process: the router (app/delivery/router.py) appends each delivery to its
subscription's queue topic; the dispatcher here sends from those queues, so that a failing
endpoint holds back only its own subscription.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeAlias

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError
from aiokafka.structs import ConsumerRecord
from opentelemetry.trace import SpanKind

from app.core.subscription import Subscription
from app.delivery.backoff import Backoff, retry_after
from app.delivery.health import Streaks
from app.delivery.parking import Parking, Progress, replay_parked
from app.delivery.queues import GENERATION_HEADER, ID_HEADER, Queues, header
from app.delivery.registry import Registry
from app.delivery.router import Router
from app.delivery.webhook import Outcome, Sender, sending
from app.deployment import Deployment
from app.errors import NotFound
from app.kafka import fetch_sessions
from app.kafka.topology import ensure_topics
from app.observability import metrics
from app.observability.metrics import Backlogs, TenantLabels, status_class
from app.observability.serving import serve_metrics
from app.observability.tracing import Tracing, child_headers, from_kafka, to_http
from app.settings import DeliverySettings, Settings

log = logging.getLogger(__name__)
SEND_GROUP = "deliver-queues"
# Users of one queue partition delivered side by side. It bounds the connections one
# subscription holds (times its partitions), so endpoints that hang cannot take them all.
WORKERS_PER_PARTITION = 8
BACKLOG_EVERY_S = 2.0  # how often the per-subscription backlog gauge is worked out

Message: TypeAlias = ConsumerRecord[bytes, bytes]


class _Gone(Exception):
    """The subscription was deleted, disabled or made again: stop sending its deliveries."""


@dataclass(slots=True)
class _Retrying:
    """A delivery being retried, kept across its task's cancellation (a rebalance) so its schedule goes on."""

    key: str
    generation: int
    started: float  # monotonic time of the first attempt
    attempts: int


class Dispatcher:
    """A consumer group over the queue topics of the webhook subscriptions.

    Each assigned partition's fetched deliveries are sent by a task of its own while the
    partition is paused: different users side by side, one user's deliveries in offset order.
    Its offset is committed once each was delivered or parked, so a retried delivery holds
    back only its own subscription's partition. When a subscription is deleted, disabled or
    made again, its tasks are cancelled at once: what was not committed stays in its queue,
    sent once it is enabled, skipped by a subscription made again under its name.
    """

    def __init__(
        self,
        settings: Settings,
        registry: Registry,
        sender: Sender,
        parking: Parking,
        queues: Queues,
        *,
        rng: random.Random | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self._delivery: DeliverySettings = settings.delivery
        self._tracing = tracing or Tracing("sluice-deliver")
        self._tenants = TenantLabels(settings.observability.metrics_max_tenants)
        self._backlogs = Backlogs(self._tenants)
        # Per queue partition: the first offset not yet committed, as far as this process knows.
        self._pending: dict[TopicPartition, int] = {}
        self._registry = registry
        self._sender = sender
        self._parking = parking
        self._queues = queues
        self._rng = rng or random.Random()
        self._busy: dict[TopicPartition, tuple[Subscription, asyncio.Task[None]]] = {}
        self._subs: dict[str, Subscription] = {}  # queue topic -> webhook subscription, disabled ones too
        # Partitions whose delivery stopped mid-batch: fetched past what was committed, so rewound before resuming.
        self._stale: set[TopicPartition] = set()
        self._topics: frozenset[str] = frozenset()
        self._changed = asyncio.Event()
        self._changed.set()
        registry.watch(self._changed.set)
        self._streaks = Streaks()
        self._retrying: dict[str, _Retrying] = {}  # by delivery id
        self._disabling: set[tuple[str, int]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka.bootstrap,
            group_id=settings.kafka.topic(f"{settings.worker.app_id}-{SEND_GROUP}"),
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a queue holds only what its subscription is owed
            session_timeout_ms=int(settings.worker.session_timeout_s * 1000),
            fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        )
        fetch_sessions.attach(self._consumer)  # it reads many partitions, few of them busy at a time

    async def run(self, stop: asyncio.Event) -> None:
        await self._consumer.start()
        stopping = asyncio.create_task(stop.wait())
        watching = asyncio.create_task(self._watch_backlogs())
        try:
            while not stop.is_set():
                if self._changed.is_set():
                    self._changed.clear()
                    await self._refresh()
                if not self._topics:  # nothing to send to: wait for a subscription
                    changed = asyncio.create_task(self._changed.wait())
                    await asyncio.wait([changed, stopping], return_when=asyncio.FIRST_COMPLETED)
                    changed.cancel()
                    continue
                batch = await self._consumer.getmany(timeout_ms=200)
                for tp, messages in batch.items():
                    self._start(tp, messages)
        finally:
            stopping.cancel()
            watching.cancel()
            self.cancel(list(self._busy))
            for task in list(self._background):
                task.cancel()
            await self._consumer.stop()

    def _start(self, tp: TopicPartition, messages: list[Message]) -> None:
        self._consumer.pause(tp)
        self._pending[tp] = messages[0].offset
        sub = self._subs.get(tp.topic)
        if sub is None or not sub.enabled:  # fetched just before its subscription went: left where it was
            self._consumer.seek(tp, messages[0].offset)
            return
        task = asyncio.create_task(self._deliver_partition(tp, sub, messages), name=f"sluice-deliver-{tp}")
        self._busy[tp] = (sub, task)

    def cancel(self, partitions: list[TopicPartition]) -> None:
        """Stop delivering on these partitions now; what is not committed is sent again."""
        for tp in partitions:
            found = self._busy.pop(tp, None)
            if found is not None:
                found[1].cancel()
                self._stale.add(tp)

    def revoked(self, partitions: list[TopicPartition]) -> None:
        """Partitions taken away: stop; their next owner starts at the last commit."""
        self.cancel(partitions)
        self._stale.difference_update(partitions)

    async def _refresh(self) -> None:
        """Follow the registry: stop sending what is no longer owed at once, and subscribe to the queues.

        A disabled subscription's queue stays subscribed, its partitions paused, so that disabling
        and enabling move no partition (a rebalance pauses every subscription for a moment); only
        a subscription made or deleted changes the group's topics.
        """
        subs = {self._queues.topic(sub): sub for sub in self._registry.webhooks()}
        for tp, (sub, _) in list(self._busy.items()):
            now = subs.get(tp.topic)
            if now is None or not now.enabled or now.created_ms != sub.created_ms:
                self.cancel([tp])
        for tp in self._consumer.assignment() if self._topics else set():
            now = subs.get(tp.topic)
            if now is None or not now.enabled:
                self._consumer.pause(tp)
            elif tp in self._stale:
                await self._rewind(tp)  # enabled again, or made again: from the last commit
            elif tp not in self._busy:
                self._consumer.resume(tp)
        live = {(sub.key, sub.created_ms) for sub in subs.values() if sub.enabled}
        for delivery, retrying in list(self._retrying.items()):
            if (retrying.key, retrying.generation) not in live:
                del self._retrying[delivery]
        self._subs = subs
        topics = frozenset(subs)
        if topics == self._topics:
            return
        for topic in sorted(topics - self._topics):
            await self._queues.ensure(topic)  # subscribing to a topic that is not there yet could make it wrong
        self._stale = {tp for tp in self._stale if tp.topic in topics}
        if topics:
            self._consumer.subscribe(sorted(topics), listener=_Rebalanced(self))
        else:
            self._consumer.unsubscribe()
        self._topics = topics

    def assigned(self, partitions: list[TopicPartition]) -> None:
        """Partitions given to this process: those of disabled subscriptions wait, paused."""
        for tp in partitions:
            sub = self._subs.get(tp.topic)
            if sub is None or not sub.enabled:
                self._consumer.pause(tp)

    async def _deliver_partition(self, tp: TopicPartition, sub: Subscription, messages: list[Message]) -> None:
        generation = str(sub.created_ms).encode()
        by_user: dict[bytes | None, list[Message]] = {}
        for message in messages:
            if header(message.headers, GENERATION_HEADER) == generation:  # else owed to an earlier namesake
                by_user.setdefault(message.key, []).append(message)
        users = deque(by_user.values())

        async def work() -> None:
            while users:
                for message in users.popleft():
                    await self._deliver(sub, message)

        try:
            workers = min(len(users), WORKERS_PER_PARTITION)
            if workers == 1:
                await work()
            elif workers:
                await asyncio.gather(*(work() for _ in range(workers)))
        except _Gone:  # deleted, disabled or made again meanwhile: the registry's change decides what next
            if self._owns(tp):
                del self._busy[tp]
                self._stale.add(tp)
                self._changed.set()
            return
        except Exception:  # parking failed (Kafka down), or a fault: send again from the last commit
            log.exception("delivery on %s failed; sending again from the last commit", tp)
            await asyncio.sleep(1)
            if self._owns(tp):
                del self._busy[tp]
                await self._rewind(tp)
            return
        try:
            await self._consumer.commit({tp: messages[-1].offset + 1})
            self._pending[tp] = messages[-1].offset + 1
        except KafkaError as exc:  # taken away meanwhile, or Kafka failed: sent again from the last commit
            log.warning("deliveries on %s not committed (%s); they are sent again", tp, exc)
            if self._owns(tp):
                del self._busy[tp]
                await self._rewind(tp)
            return
        if self._owns(tp):
            del self._busy[tp]
            self._consumer.resume(tp)

    async def _watch_backlogs(self) -> None:
        """Every few seconds, each subscription's deliveries not yet committed, over the queue partitions held here.

        The ends come from the broker: a partition being retried is paused, and its last fetch's
        high watermark would not show what arrived since.
        """
        while True:
            await asyncio.sleep(BACKLOG_EVERY_S)
            held = [tp for tp in self._consumer.assignment() if tp.topic in self._subs]
            try:
                ends = await self._consumer.end_offsets(held) if held else {}
            except KafkaError as exc:
                log.info("backlogs not worked out this time: %r", exc)
                continue
            owed: dict[tuple[str, str], int] = {}
            for tp, end in ends.items():
                sub = self._subs.get(tp.topic)
                if sub is None:
                    continue
                start = self._pending.get(tp)
                if start is None:  # nothing fetched here yet: owed from the last commit
                    start = await self._consumer.committed(tp) or 0
                key = (sub.tenant, sub.name)
                owed[key] = owed.get(key, 0) + max(0, end - start)
            for (tenant, name), records in owed.items():
                self._backlogs.set(tenant, name, records)

    def _owns(self, tp: TopicPartition) -> bool:
        """Is the running task still the one delivering `tp` (not cancelled and replaced)?"""
        found = self._busy.get(tp)
        return found is not None and found[1] is asyncio.current_task()

    async def _rewind(self, tp: TopicPartition) -> None:
        """Fetch `tp` again from its last commit (or its beginning), if it is still assigned here."""
        self._stale.discard(tp)
        try:
            committed = await self._consumer.committed(tp)
            if committed is None:
                await self._consumer.seek_to_beginning(tp)
            else:
                self._consumer.seek(tp, committed)
            self._consumer.resume(tp)
        except (KafkaError, AssertionError) as exc:  # no longer assigned: its next owner starts at the commit
            log.info("not rewinding %s: %r", tp, exc)

    async def _deliver(self, sub: Subscription, message: Message) -> None:
        """Attempt until a 2xx, or until the schedule gives up: then park it, and go on."""
        delivery = (header(message.headers, ID_HEADER) or b"").decode()
        retrying = self._retrying.get(delivery)
        started = retrying.started if retrying else time.monotonic()
        attempts = retrying.attempts if retrying else 0
        while True:
            current = self._registry.get(sub.tenant, sub.name)
            if current is None or current.created_ms != sub.created_ms or not current.enabled:
                raise _Gone
            attempts += 1
            began = time.perf_counter()
            if self._tracing.exporting:
                span = self._tracing.start(
                    "POST webhook",
                    from_kafka(message.headers),
                    kind=SpanKind.CLIENT,
                    attributes={"sluice.subscription": sub.key, "sluice.delivery_id": delivery},
                )
                outcome = await self._sender.attempt(current, delivery, message.value, to_http(span))
                self._tracing.end([span])
            else:  # nothing recorded: the record's trace goes on under a new span id, without the SDK's cost
                outcome = await self._sender.attempt(current, delivery, message.value, _child(message.headers))
            metrics.DELIVERY_ATTEMPT.observe(time.perf_counter() - began)
            self._attempted(current, outcome)
            if outcome.ok:
                self._retrying.pop(delivery, None)
                return
            backoff = Backoff.of(self._delivery, current)
            asked = retry_after(outcome.retry_after, time.time())
            wait = backoff.next_delay(attempts, time.monotonic() - started, self._rng, asked)
            if wait is None:
                self._retrying.pop(delivery, None)
                assert outcome.failure is not None
                await self._parking.park(current, message.key, delivery, message.value, outcome.failure)
                metrics.DELIVERIES_PARKED.labels(self._tenants(sub.tenant)).inc()
                return
            metrics.DELIVERY_RETRIES.inc()
            self._retrying[delivery] = _Retrying(sub.key, sub.created_ms, started, attempts)
            await asyncio.sleep(wait)

    def _attempted(self, sub: Subscription, outcome: Outcome) -> None:
        """Every attempt's outcome comes here: its count, the failure streak, and disabling the endpoint if it lasts."""
        metrics.DELIVERIES.labels("delivered" if outcome.ok else "failed", status_class(outcome.status)).inc()
        generation = sub.created_ms
        if outcome.ok:
            self._streaks.succeeded(sub.key, generation)
            return
        now = time.time()
        since = self._streaks.failed(sub.key, generation, now)
        after = self._delivery.disable_after_s if sub.disable_after_s is None else sub.disable_after_s
        if self._streaks.due(sub.key, generation, now, after) and (sub.key, generation) not in self._disabling:
            self._disabling.add((sub.key, generation))
            reason = f"no 2xx for {now - since:.0f} s; the last attempt: {outcome.failure}"
            task = asyncio.create_task(self._disable(sub, reason, since))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _disable(self, sub: Subscription, reason: str, since: float) -> None:
        try:
            failing_since = datetime.fromtimestamp(since, UTC)
            done = await self._registry.disable(sub.tenant, sub.name, reason, failing_since, sub.created_ms)
            if done is not None:
                log.warning("disabled webhook subscription %s: %s", sub.key, reason)
                self._streaks.forget(sub.key, sub.created_ms)
        except Exception:  # not disabled this time: the next failed attempt tries again
            log.exception("disabling webhook subscription %s failed", sub.key)
        finally:
            self._disabling.discard((sub.key, sub.created_ms))


def _child(headers: list[tuple[str, bytes]] | tuple[tuple[str, bytes], ...]) -> dict[str, str] | None:
    """The HTTP headers of a child span of the record's trace, if it has one."""
    child = child_headers(headers)
    return None if child is None else {name: value.decode("latin-1") for name, value in child}


class _Rebalanced(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        self._dispatcher.revoked(list(revoked))

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self._dispatcher.assigned(list(assigned))


async def run(settings: Settings) -> int:
    deployment = Deployment.load(settings)
    await ensure_topics(settings.kafka.bootstrap, deployment.topology)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    registry = Registry.of(deployment)
    await registry.start()
    parking = Parking(settings.kafka.bootstrap, deployment.topology)
    await parking.start()
    queues = Queues(settings.kafka.bootstrap, deployment.topology)
    observability = settings.observability
    tracing = Tracing("sluice-deliver", observability.otlp_endpoint)
    served = None
    if observability.metrics and observability.deliver_metrics_port:
        try:
            served = await serve_metrics(
                observability.deliver_metrics_host, observability.deliver_metrics_port, observability.metrics_token
            )
        except OSError as exc:  # the port is taken: deliver anyway, unwatched, and say so
            log.warning("metrics not served on port %d: %s", observability.deliver_metrics_port, exc)
    try:
        async with sending(settings.delivery) as sender:
            router = Router(settings, deployment.topology, deployment.schemas, registry, queues)
            dispatcher = Dispatcher(settings, registry, sender, parking, queues, tracing=tracing)
            log.info("delivering to webhooks")
            async with asyncio.TaskGroup() as stages:  # one stage failing stops the other
                stages.create_task(router.run(stop))
                stages.create_task(dispatcher.run(stop))
    finally:
        tracing.shutdown()
        if served is not None:
            await served.cleanup()
        with contextlib.suppress(Exception):
            await parking.stop()
        with contextlib.suppress(Exception):
            await registry.stop()
    return 0


async def replay_command(settings: Settings, tenant: str, name: str) -> int:
    """`sluice replay TENANT NAME`: prints {"replayed", "parked"}; exit 1 if some stay parked.

    While it works, a progress line on stderr every second, and the last when it ends: counts and rate.
    """
    deployment = Deployment.load(settings)
    registry = Registry.of(deployment)
    await registry.start()
    progress = Progress()
    started = time.monotonic()

    def write(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    printer = asyncio.create_task(_print_progress(progress, write))
    try:
        sub = registry.get(tenant, name)
        if sub is None or sub.url is None:
            raise NotFound(f"tenant {tenant!r} has no webhook subscription {name!r}", field="subscription")
        result = await replay_parked(deployment, sub, progress)
    finally:
        printer.cancel()
        await registry.stop()
    write(progress.line(time.monotonic() - started))
    print(orjson.dumps(result).decode())
    return 1 if result["parked"] else 0


async def _print_progress(progress: Progress, write: Callable[[str], None], every_s: float = 1.0) -> None:
    started = time.monotonic()
    while True:
        await asyncio.sleep(every_s)
        write(progress.line(time.monotonic() - started))
