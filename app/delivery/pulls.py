"""The pulls topic, followed in every producer process: claims, acks and nacks of pull subscriptions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from app.avro.schemas import SchemaSet
from app.core.instants import epoch_ms
from app.core.subscription import Subscription
from app.delivery.pull import ACK, LOCK, NACK, Change, Ledger, Outcome, Pending, Scan, State, pull_key
from app.delivery.reader import DecodedCache, Item, StreamReader
from app.deployment import Deployment
from app.errors import Conflict, NotFound, Unavailable
from app.kafka.topology import ensure_topic
from app.runtime import tasks

log = logging.getLogger(__name__)

# A request answers with what its scans have read by then: the vendor's SDK gives up after 5 s.
SCAN_S = 3.0
# Scans at once in one process: each is a Kafka consumer of its own.
MAX_SCANS = 32
# Events a pull tries per partition before it scans again: concurrent pullers race for the
# earliest ones, and each loser moves on to the next instead of reading the stream again.
CANDIDATES = 8
SCANS = 3  # scans of one pull at most, when other pullers took every candidate of the one before
WRITE_TIMEOUT_S = 10.0  # for Kafka to acknowledge a change and this process to read it back; then 503
DAY_MS = 24 * 3600 * 1000


def now_ms() -> int:
    return int(time.time() * 1000)


def published_ms(record: Mapping[str, Any]) -> int:
    """When an event reached its topic: its send_at if it was scheduled, else when Sluice received it."""
    received, send_at = record["received_at"], record.get("send_at")
    return epoch_ms(received if send_at is None else max(received, send_at))


class Pulls:
    """Locks, acks and nacks of pull subscriptions, kept on the compacted single-partition pulls topic.

    Records are keyed `<tenant>:<subscription>:<event id>`; every producer process reads the
    whole topic at start and then follows it into a `Ledger`. A pull claims an event by
    writing a lock and reading the topic back to that record: the ledger says whether it
    won (the first running lock in log order does), so however many processes race for an
    event, one gets it. Events themselves are read from their topic's Kafka topic on each
    request, from a per-subscription floor this process keeps: the offset before which every
    record of a partition is settled (acked, or not the subscription's).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        partitions: int,
        schemas: SchemaSet,
        *,
        lock_s: float,
        replication_factor: int = 1,
        min_insync_replicas: int = 0,
        fetch_max_wait_ms: int = 100,
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._partition = TopicPartition(topic, 0)
        self._partitions = partitions
        self._lock_ms = int(lock_s * 1000)
        self._replication_factor = replication_factor
        self._min_insync_replicas = min_insync_replicas
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._cache = DecodedCache(schemas, size=10_000)
        self._ledger = Ledger()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=fetch_max_wait_ms
        )
        # End offsets and offsets by time on a connection of their own: the broker answers a
        # connection's requests in order, and the follower's fetch waits for data.
        self._meta = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
        self._position = 0
        self._advanced = asyncio.Condition()
        self._waiting: dict[str, asyncio.Future[Outcome]] = {}
        self._floors: dict[tuple[str, str, int, str], dict[int, int]] = {}
        self._scans = asyncio.Semaphore(MAX_SCANS)
        self._reader: asyncio.Task[None] | None = None
        # Each write's token starts with the writing process, so that a lock on the topic says who holds it.
        self._writer = f"{socket.gethostname()}:{os.getpid()}"

    @classmethod
    def of(cls, deployment: Deployment) -> Pulls:
        settings = deployment.settings
        return cls(
            settings.kafka.bootstrap,
            deployment.topology.pulls,
            deployment.topology.partitions,
            deployment.schemas,
            lock_s=settings.delivery.pull_lock_s,
            replication_factor=deployment.topology.replication_factor,
            min_insync_replicas=deployment.topology.min_insync_replicas,
            fetch_max_wait_ms=settings.kafka.fetch_max_wait_ms,
        )

    async def start(self) -> None:
        config = {
            # One partition: a total order of claims, which is what makes the log the arbiter.
            "cleanup.policy": "compact",
            # The broker's clock stamps every record, so every process folds locks by one clock.
            "message.timestamp.type": "LogAppendTime",
            # Compaction keeps the last record of a key; while a lock may still run, the
            # records before it must stay, or a restarted process could fold another winner.
            "min.compaction.lag.ms": str(max(DAY_MS, 2 * self._lock_ms)),
        }
        await ensure_topic(
            self._bootstrap,
            self._topic,
            1,
            self._replication_factor,
            config,
            min_insync_replicas=self._min_insync_replicas,
        )
        await self._meta.start()
        await self._producer.start()
        await self._consumer.start()
        self._consumer.assign([self._partition])
        await self._consumer.seek_to_beginning(self._partition)
        self._reader = asyncio.create_task(self._read_forever(), name="sluice-pulls")

    async def stop(self) -> None:
        await tasks.stop(self._reader)
        await self._consumer.stop()
        await self._producer.stop()
        await self._meta.stop()

    async def caught_up(self, timeout: float = 10.0) -> None:
        """Return once every change written anywhere before this call is folded in here."""
        try:
            end = (await self._meta.end_offsets([self._partition]))[self._partition]
        except KafkaError as exc:
            raise Unavailable(f"cannot read pull subscriptions from Kafka ({exc}); retry later") from exc
        deadline = time.monotonic() + timeout
        async with self._advanced:
            while self._position < end:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Unavailable("pull subscriptions are not read back from Kafka in time; retry later")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._advanced.wait(), left)

    # --- what the routes ask ---------------------------------------------------------------------

    async def pull(self, sub: Subscription, kafka_topic: str) -> Pending | None:
        """Lock the earliest event that may go out now and return it; None when there is none."""
        await self.caught_up()
        deadline = time.monotonic() + SCAN_S
        for _ in range(SCANS):
            if time.monotonic() >= deadline:
                break
            scan = await self._scan(
                sub, kafka_topic, lambda scan, p: scan.available_in(p) >= CANDIDATES, deadline=deadline
            )
            if not scan.available:
                return None
            for event in scan.available:
                key = scan.key(event.id)
                if self._ledger.state(key, now_ms()) is not State.AVAILABLE:
                    continue  # taken, or acked, since the scan read it
                outcome = await self._write(key, self._change(LOCK))
                if outcome is Outcome.APPLIED:
                    return event
                if outcome is Outcome.ACKED:
                    await self._ack_again(key)
        return None

    async def pending(
        self, sub: Subscription, kafka_topic: str, *, window_ms: int | None, offset: int, limit: int
    ) -> list[Pending]:
        """The events not acked yet (locked ones too), earliest first, from `offset`; within the window if given."""
        await self.caught_up()
        wanted = offset + limit
        if window_ms is None:
            scan = await self._scan(sub, kafka_topic, lambda scan, p: scan.unacked_in(p) >= wanted)
        else:
            cutoff = now_ms() - window_ms
            scan = await self._scan(sub, kafka_topic, lambda scan, p: scan.unacked_in(p) >= wanted, cutoff_ms=cutoff)
        return scan.unacked()[offset:wanted]

    async def ack(self, sub: Subscription, kafka_topic: str, event_id: str) -> None:
        """Mark an event done for good (whoever holds it): it is never handed out again. Acking twice is fine."""
        await self.caught_up()
        key = pull_key(sub.tenant, sub.name, event_id)
        if self._ledger.state(key, now_ms()) is State.ACKED:
            return
        await self._check_exists(sub, kafka_topic, event_id)
        await self._write(key, self._change(ACK))

    async def nack(self, sub: Subscription, kafka_topic: str, event_id: str) -> None:
        """End an event's lock: it may be handed out again at once."""
        await self.caught_up()
        key = pull_key(sub.tenant, sub.name, event_id)
        state = self._ledger.state(key, now_ms())
        if state is not State.ACKED:
            await self._check_exists(sub, kafka_topic, event_id)
            if state is State.AVAILABLE:
                return  # not locked: nothing to end
            outcome = await self._write(key, self._change(NACK))
            if outcome is not Outcome.ACKED:
                return
            await self._ack_again(key)
        raise Conflict(
            f"event {event_id!r} is acknowledged already; it is not handed out again",
            field="event_id",
            code="event_acked",
        )

    # --- reading events ----------------------------------------------------------------------------

    async def _check_exists(self, sub: Subscription, kafka_topic: str, event_id: str) -> None:
        if self._ledger.known(pull_key(sub.tenant, sub.name, event_id)):
            return  # a record of it was written, after the same check
        scan = await self._scan(sub, kafka_topic, lambda scan, p: scan.seen(event_id))
        if not scan.seen(event_id):
            raise NotFound(
                f"no unacknowledged event {event_id!r} in subscription {sub.name!r}",
                field="event_id",
                code="event_not_found",
            )

    async def _scan(
        self,
        sub: Subscription,
        kafka_topic: str,
        enough: Callable[[Scan, int], bool],
        *,
        cutoff_ms: int = 0,
        deadline: float | None = None,
    ) -> Scan:
        """Read the subscription's events from its floor (or from `cutoff_ms`, if later) to where the topic
        ends now, until `enough(scan, partition)` holds for every partition not at its end, or until
        `deadline` (monotonic; by default SCAN_S from now)."""
        tps = [TopicPartition(kafka_topic, p) for p in range(self._partitions)]
        scan = Scan(self._ledger, sub.tenant, sub.name, now_ms(), cutoff_ms=cutoff_ms)
        try:
            floor = await self._floor(sub, kafka_topic, tps)
            ends = {tp.partition: end for tp, end in (await self._meta.end_offsets(tps)).items()}
            start = dict(floor)
            if cutoff_ms:
                since = await self._at(tps, cutoff_ms)
                start = {p: max(offset, since[p]) for p, offset in floor.items()}
            # A topic deleted and made again may end before a floor: start at its end then.
            start = {p: min(offset, ends[p]) for p, offset in start.items()}
            async with self._scans:
                until = time.monotonic() + SCAN_S if deadline is None else deadline
                await self._read(sub, kafka_topic, start, ends, scan, enough, until)
        except KafkaError as exc:
            raise Unavailable(f"cannot read the events of the subscription from Kafka ({exc}); retry later") from exc
        key = (sub.tenant, sub.name, sub.created_ms, kafka_topic)
        for p, settled in scan.settled.items():
            if start[p] <= self._floors[key][p]:
                self._floors[key][p] = max(self._floors[key][p], settled)
        return scan

    async def _read(
        self,
        sub: Subscription,
        kafka_topic: str,
        start: dict[int, int],
        ends: dict[int, int],
        scan: Scan,
        enough: Callable[[Scan, int], bool],
        deadline: float,
    ) -> None:
        reader = StreamReader(
            self._bootstrap,
            kafka_topic,
            "events",
            self._partitions,
            self._cache,
            fetch_max_wait_ms=self._fetch_max_wait_ms,
        )

        def going() -> list[int]:
            return [p for p, end in ends.items() if reader.positions[p] < end and not enough(scan, p)]

        try:
            await reader.open(start, from_end=False, field="subscription")
            while going() and time.monotonic() < deadline:
                for item in await reader.read(timeout_ms=200):
                    if item.offset < ends[item.partition]:  # later records are for the next request
                        scan.add(item.partition, item.offset, self._event(sub, item))
        finally:
            await reader.close()

    def _event(self, sub: Subscription, item: Item) -> Pending | None:
        """The record as an event of the subscription, or None when it is not one."""
        record = item.record
        if not sub.matches(record):
            return None
        published = published_ms(record)
        if published < sub.created_ms:  # the subscription gets what was published after it was made
            return None
        return Pending(record["id"], record["user_id"], published, item.partition, item.offset, record)

    async def _floor(self, sub: Subscription, kafka_topic: str, tps: list[TopicPartition]) -> dict[int, int]:
        """Where this process starts reading the subscription's events; first where it was created."""
        key = (sub.tenant, sub.name, sub.created_ms, kafka_topic)
        if key not in self._floors:
            self._floors[key] = await self._at(tps, sub.created_ms)
        return dict(self._floors[key])

    async def _at(self, tps: list[TopicPartition], moment_ms: int) -> dict[int, int]:
        """Per partition, the first offset written at or after `moment_ms` (its end if none was)."""
        found = await self._meta.offsets_for_times({tp: moment_ms for tp in tps})
        ends = await self._meta.end_offsets(tps)
        return {tp.partition: ends[tp] if found[tp] is None else found[tp].offset for tp in tps}

    # --- the pulls topic ---------------------------------------------------------------------------

    def _change(self, op: str) -> Change:
        return Change(op, f"{self._writer}:{uuid.uuid4().hex}", self._lock_ms if op == LOCK else 0)

    async def _write(self, key: str, change: Change) -> Outcome:
        """Write a change and wait until this process has folded it in; what it did."""
        waiting: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiting[change.token] = waiting
        try:
            try:
                await self._producer.send_and_wait(self._topic, change.encode(), key=key.encode(), partition=0)
            except Exception as exc:  # any Kafka failure: the client may retry
                raise Unavailable("Kafka did not acknowledge the pull subscription change; retry later") from exc
            try:
                async with asyncio.timeout(WRITE_TIMEOUT_S):
                    return await waiting
            except TimeoutError:
                raise Unavailable(
                    "the pull subscription change is not read back from Kafka in time; retry later"
                ) from None
        finally:
            self._waiting.pop(change.token, None)

    async def _ack_again(self, key: str) -> None:
        # A lock or nack landed after the ack: write the ack once more, so that it is the key's
        # last record again and compaction, which keeps only that, keeps the event acked.
        await self._write(key, self._change(ACK))

    async def _read_forever(self) -> None:
        while True:
            try:
                await self._follow()
            except KafkaError as exc:
                # Keep following; meanwhile caught_up() times out and requests answer 503.
                log.warning("reading %s failed (%r); retrying", self._topic, exc)
                await asyncio.sleep(1)

    async def _follow(self) -> None:
        while True:
            batch = await self._consumer.getmany(self._partition, timeout_ms=500)
            for message in batch.get(self._partition, []):
                self._apply(message.key, message.value, message.timestamp)
            position = await self._consumer.position(self._partition)
            async with self._advanced:
                self._position = position
                self._advanced.notify_all()

    def _apply(self, key: bytes | None, value: bytes | None, timestamp: int) -> None:
        if key is None:
            return
        try:
            change = None if value is None else Change.decode(value)
        except ValueError as exc:
            log.warning("skipped a record of %s: %s", self._topic, exc)
            return
        outcome = self._ledger.apply(key.decode(errors="replace"), change, timestamp)
        waiting = None if change is None else self._waiting.get(change.token)
        if waiting is not None and not waiting.done():
            waiting.set_result(outcome)
