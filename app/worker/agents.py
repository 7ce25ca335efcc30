"""The per-user agent: decode, dedupe and apply a batch through the ledger, write state, send effects."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from itertools import chain
from typing import Any, cast

import faust
from faust.streams import _current_event
from faust.types import TP, EventT, StoreT

from app import ledger
from app.dead_letter import DeadLetter
from app.envelope import Envelope, utcnow
from app.errors import SchemaError, SluiceError
from app.schemas import SchemaSet
from app.settings import Settings
from app.topology import Topology
from app.worker.offsets import CommittedOffsets
from app.worker.outbox import Outbox
from app.worker.progress import Admission, Progress
from app.worker.rulebook import Rulebook
from app.worker.sweep import Sweep

log = logging.getLogger(__name__)


def register(app: faust.App, settings: Settings, rulebook: Rulebook, schemas: SchemaSet, topology: Topology) -> None:
    raw: dict[str, Any] = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
    # acks=False: faust acks the records it drops around a rebalance and would commit past
    # them. The agent commits instead, only what it applied (app/worker/progress.py).
    source = app.topic(*topology.events.values(), partitions=topology.partitions, acks=False, **raw)
    # One table for user records and dedupe entries: both land in the changelog
    # partition of the event at hand, in write order (see app/ledger.py).
    table = app.Table(
        "ledger",
        default=None,
        partitions=topology.partitions,
        key_type=bytes,
        value_type=bytes,
        options={"driver": "rocksdict"},
    )
    sweep = Sweep()
    event_schema, effect_schema = schemas["event"], schemas["effect"]
    dead_letter_schema = schemas["dead_letter"]

    # Held from a batch's first read to its commit. faust waits for unacked records before it
    # gives partitions up; ours are never acked (acks=False), so a rebalance waits for this.
    # Without it the new owner recovered the changelog while the old one still wrote to it,
    # and applied events again on stale state (seed 1487835131: 96 effects differed).
    in_flight = asyncio.Lock()

    async def finish_the_batch(sender: Any, *args: Any, **kwargs: Any) -> None:
        async with in_flight:
            pass

    app.on_partitions_revoked.connect(cast(Any, finish_the_batch))  # faust types receivers narrowly

    # Concurrency 1: one batch at a time, in partition order. A batch's offsets are
    # committed only after the outbox has Kafka's ack for everything it wrote.
    @app.agent(source, concurrency=1, name="rules")
    async def apply_rules(stream: faust.StreamT[bytes]) -> None:
        take = stream.take_events  # type: ignore[attr-defined]  # missing from faust's StreamT
        progress = Progress()
        generation: int | None = None
        uncommitted: set[TP] = set()
        committed_at = [0.0]
        async with (
            Outbox(settings.bootstrap, timeout_s=settings.publish_timeout_s) as outbox,
            CommittedOffsets(settings.bootstrap, settings.group_id) as committed,
        ):

            async def admit(events: list[EventT[bytes]]) -> list[EventT[bytes]]:
                """The events to apply now; seeks back to any hole faust left (app/worker/progress.py)."""
                nonlocal generation
                admitted = []
                assigned = app.consumer.assignment()
                for event in events:
                    message = event.message
                    if message.generation_id != app.consumer_generation_id or message.tp not in assigned:
                        continue  # buffered before a rebalance: the partition's owner now applies it
                    if message.generation_id != generation:
                        generation = message.generation_id
                        progress.reset()
                        uncommitted.clear()
                    where = (message.topic, message.partition)
                    if not progress.knows(where):
                        progress.start(where, await start_of(where))
                    if progress.admit(where, message.offset) is Admission.NEXT:
                        admitted.append(event)
                await seek_back()
                return admitted

            async def seek_back() -> None:
                assigned = app.consumer.assignment()
                for where, offset in progress.seeks_due(time.monotonic()):
                    if TP(*where) in assigned:
                        log.info("a hole in %s[%d] at %d: seeking back", *where, offset)
                        await app.consumer.seek_wait({TP(*where): offset})

            async def keep_seeking() -> None:
                while True:
                    await asyncio.sleep(progress.seek_every_s)
                    async with in_flight:
                        await seek_back()

            async def start_of(where: tuple[str, int]) -> int:
                # The committed offset, or the log's start for a new group (auto_offset_reset
                # is earliest) or when retention removed records the group never committed.
                earliest = (await app.consumer.earliest_offsets(TP(*where)))[TP(*where)]
                found = await committed.get(where)
                if found is not None and found < earliest:
                    log.warning("%s[%d]: records %d..%d expired before they were applied", *where, found, earliest - 1)
                return earliest if found is None else max(found, earliest)

            async def apply_batch(events: list[EventT[bytes]]) -> None:
                admitted = await admit(events)
                by_partition: dict[int, list[EventT[bytes]]] = {}
                for event in admitted:
                    by_partition.setdefault(event.message.partition, []).append(event)
                for partition_events in by_partition.values():
                    apply_partition(partition_events, outbox)
                changelog = table.changelog_topic.get_topic_name()
                for (topic, partition), offset in (await outbox.flush()).items():
                    if topic == changelog:
                        # Where recovery resumes replaying the changelog into RocksDB.
                        cast(StoreT[bytes, bytes], table.data).set_persisted_offset(TP(topic, partition), offset)
                uncommitted.update(event.message.tp for event in admitted)
                if time.monotonic() - committed_at[0] >= settings.worker_commit_interval_s:
                    await commit()

            async def commit() -> None:
                # An interval, not every batch: a coordinator round trip per small batch cost more
                # than the batch at 1,000 events/s. What a crash leaves uncommitted comes again,
                # and the ledger recognises it (app/ledger.py).
                committed_at[0] = time.monotonic()
                # Only partitions still assigned: after a rebalance the new owner commits the rest
                # (and aiokafka's commit of nothing is an error that crashes faust's consumer).
                assigned = app.consumer.assignment()
                offsets = {tp: progress.position(tp) for tp in uncommitted if tp in assigned and progress.knows(tp)}
                uncommitted.clear()
                if offsets:
                    # faust's consumer holds the group membership, so its commit is the group's.
                    await cast(Any, app.consumer)._commit(offsets)

            seeking = asyncio.create_task(keep_seeking())
            try:
                async for events in take(settings.worker_batch_size, within=settings.worker_batch_wait_s):
                    async with in_flight:
                        await apply_batch(events)
            finally:
                seeking.cancel()

    def apply_partition(events: list[EventT[bytes]], outbox: Outbox) -> None:
        partition = events[0].message.partition
        # RocksDB reads and writes go to the partition of faust's "current event";
        # take_events buffers in another task, so name it here (the context var is ours).
        _current_event.set(weakref.ref(events[0]))
        store = table.data
        now = utcnow()
        batch = ledger.Batch(store.get, now=now, dedupe_window_s=settings.dedupe_window_s)
        for event in events:
            message = event.message
            try:
                envelope = Envelope.decode(event_schema, event.value)
                spec = rulebook[envelope.topic]
            except (SchemaError, KeyError) as exc:
                error = exc if isinstance(exc, SluiceError) else SchemaError(f"unknown topic {exc}")
                letter = DeadLetter.of(
                    error, received_at=utcnow(), stage="worker", source=message.topic, body=event.value, tenant=None
                )
                outbox.add(
                    topology.dead_letters, partition, event.key or b"", dead_letter_schema.encode(letter.to_record())
                )
                log.warning("dead-lettered %s[%d]@%d: %s", message.topic, partition, message.offset, error)
                continue
            result = batch.step(
                envelope,
                source_topic=message.topic,
                offset=message.offset,
                rules=spec.rules,
                rules_version=spec.rules_version,
            )
            # The effect's key is the event's, so it lands in the same partition number.
            if result.effect is not None:
                outbox.add(topology.effects, partition, envelope.key, effect_schema.encode(result.effect))
            if result.reply is not None:
                outbox.add(topology.replies, partition, envelope.key, effect_schema.encode(result.reply))
        # RocksDB here and now, the changelog with the batch. Entries before users: see
        # app/ledger.py for why that order survives any crash.
        changelog = table.changelog_topic.get_topic_name()
        for key, value in chain(batch.entries, batch.users):
            store[key] = value
            outbox.add(changelog, partition, key, value)
        # Twice the batch: the sweep goes round faster than entries are added (app/worker/sweep.py).
        db = cast(Any, store)._db_for_partition(partition)  # the partition's rocksdict; faust has no public handle
        doomed = sweep.step(partition, db, budget=2 * len(events), now=now, dedupe_window_s=settings.dedupe_window_s)
        for key in doomed:
            del store[key]
            outbox.add(changelog, partition, key, None)  # a tombstone: compaction frees it in Kafka too
