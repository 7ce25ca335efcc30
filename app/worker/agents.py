"""The per-user agent: decode, dedupe and apply a batch through the ledger, write state, send effects."""

from __future__ import annotations

import logging
import time
from contextlib import aclosing
from itertools import chain
from typing import cast

import faust
import rocksdict
from faust.types import TP, Message, StoreT
from opentelemetry.trace import Span, SpanKind

from app import ledger
from app.avro.schemas import SchemaSet
from app.core.dead_letter import DeadLetter
from app.core.envelope import Envelope, utcnow
from app.errors import SchemaError, SluiceError
from app.kafka.topology import Topology
from app.observability.tracing import Tracing, child_headers, from_kafka, to_kafka
from app.settings import Settings
from app.worker import faust_compat, intake
from app.worker.observed import Tally
from app.worker.outbox import Outbox
from app.worker.recent_users import RecentUsers
from app.worker.rulebook import Rulebook
from app.worker.sweep import Sweep
from app.worker.tables import Windows

log = logging.getLogger(__name__)

# Events applied before their writes are sent, while later partitions of the batch are applied.
# Not less: a node has one produce request in flight, so small sends queue round trips one
# behind the other (at a steady 1,000 events/s, a send per partition raised the p50 from 10
# to 15 ms); a batch under this goes in one request at its flush.
SEND_AFTER_EVENTS = 100


def register(
    app: faust.App,
    settings: Settings,
    rulebook: Rulebook,
    schemas: SchemaSet,
    topology: Topology,
    windows: Windows | None = None,
    tracing: Tracing | None = None,
) -> None:
    """The rules agent; it also keeps the windowed tables (`windows`) of the events it reads.

    Each effect record carries the trace context of a child span of its event's (`tracing`).
    """
    tracing = tracing or Tracing("sluice-worker")
    measured = settings.observability.metrics
    events = intake.source(app, *topology.events.values(), partitions=topology.partitions)
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
    recent = RecentUsers(settings.worker.cached_users)
    event_schema, effect_schema = schemas["event"], schemas["effect"]
    dead_letter_schema = schemas["dead_letter"]

    # Concurrency 1: one batch at a time, each partition in offset order (app/worker/intake.py).
    @app.agent(events, concurrency=1, name="rules")
    async def apply_rules(stream: faust.StreamT[bytes]) -> None:
        async with (
            Outbox(settings.kafka.bootstrap, timeout_s=settings.producer.publish_timeout_s) as outbox,
            intake.Intake(app, intake.IntakeConfig.of(settings), events) as records,
            aclosing(records.batches(stream)) as batches,
        ):
            async for batch in batches:
                started = time.perf_counter()
                tally = Tally() if measured else None
                spans: list[Span] = []
                by_partition: dict[int, list[Message]] = {}
                for message in batch:
                    by_partition.setdefault(message.partition, []).append(message)
                unsent = 0
                for partition_messages in by_partition.values():
                    apply_partition(partition_messages, outbox, tally, spans)
                    if windows is not None:
                        runs: dict[str, list[Message]] = {}
                        for message in partition_messages:
                            runs.setdefault(message.topic, []).append(message)
                        for topic, run in runs.items():
                            windows.apply(topic, run[0].partition, run, outbox)
                    unsent += len(partition_messages)
                    if unsent >= SEND_AFTER_EVENTS:
                        await outbox.send()  # acked while the next partition is applied
                        unsent = 0
                changelog = table.changelog_topic.get_topic_name()
                # Everything the batch wrote is in Kafka before the Intake commits its offsets.
                flushed = await outbox.flush()
                for (topic, partition), offset in flushed.items():
                    if topic == changelog:
                        # Where recovery resumes replaying the changelog into RocksDB.
                        cast(StoreT[bytes, bytes], table.data).set_persisted_offset(TP(topic, partition), offset)
                if windows is not None:
                    windows.flushed(flushed)
                if tally is not None:
                    tally.export(len(batch), time.perf_counter() - started, time.time())
                tracing.end(spans)

    def apply_partition(messages: list[Message], outbox: Outbox, tally: Tally | None, spans: list[Span]) -> None:
        partition = messages[0].partition
        db = faust_compat.partition_db(table, partition)
        now = utcnow()
        batch = ledger.Batch(
            db.get, now=now, dedupe_window_s=settings.worker.dedupe_window_s, known=recent.of(messages[0].generation_id)
        )
        for message in messages:
            value = cast(bytes, message.value)  # raw values (intake.RAW)
            try:
                envelope = Envelope.decode(event_schema, value)
                spec = rulebook[envelope.topic]
            except (SchemaError, KeyError) as exc:
                error = exc if isinstance(exc, SluiceError) else SchemaError(f"unknown topic {exc}")
                letter = DeadLetter.of(
                    error, received_at=utcnow(), stage="worker", source=message.topic, body=value, tenant=None
                )
                outbox.add(
                    topology.dead_letters, partition, message.key or b"", dead_letter_schema.encode(letter.to_record())
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
            if tally is not None:
                if result.outcome is ledger.Outcome.APPLIED:
                    tally.applied_one(envelope.topic, result.effect or {}, envelope.received_at)
                elif result.outcome is ledger.Outcome.REDELIVERED:
                    tally.redelivered_one(envelope.received_at)
                else:
                    tally.duplicates += 1
            if result.effect is None and result.reply is None:
                continue
            # What it writes is a child span of the event's: the trace goes on to subscribers.
            trace: list[tuple[str, bytes]] | None
            if tracing.exporting:
                span = tracing.start(
                    "sluice apply",
                    from_kafka(message.headers),
                    kind=SpanKind.CONSUMER,
                    attributes={"sluice.tenant": envelope.tenant, "sluice.topic": envelope.topic},
                )
                spans.append(span)
                trace = to_kafka(span)
            else:
                trace = child_headers(message.headers)
            # The effect's key is the event's, so it lands in the same partition number.
            if result.effect is not None:
                outbox.add(topology.effects, partition, envelope.key, effect_schema.encode(result.effect), trace)
            if result.reply is not None:
                outbox.add(topology.replies, partition, envelope.key, effect_schema.encode(result.reply), trace)
        # RocksDB here and now, the changelog with the batch. Entries before users: see
        # app/ledger.py for why that order survives any crash.
        # One RocksDB write for them all: a put each was a twelfth of the worker's time.
        changelog = table.changelog_topic.get_topic_name()
        writes = rocksdict.WriteBatch(raw_mode=True)
        # Twice the batch: the sweep goes round faster than entries are added (app/worker/sweep.py).
        # Its deletes come first, so an expired entry this batch writes afresh is kept.
        doomed = sweep.step(
            partition, db, budget=2 * len(messages), now=now, dedupe_window_s=settings.worker.dedupe_window_s
        )
        for key in doomed:
            writes.delete(key)
            outbox.add(changelog, partition, key, None)  # a tombstone: compaction frees it in Kafka too
        for key, value in chain(batch.entries, batch.users):
            writes.put(key, value)
            outbox.add(changelog, partition, key, value)
        db.write(writes)
        recent.keep(batch.user_records)
