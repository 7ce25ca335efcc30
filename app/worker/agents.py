"""The per-user agent: decode, dedupe and apply a batch through the ledger, write state, send effects."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from contextlib import aclosing
from datetime import datetime
from itertools import chain
from typing import Any, cast

import faust
import rocksdict
from faust.types import Message
from opentelemetry.trace import Span, SpanKind

from app import ledger, native
from app.avro.schemas import SchemaSet
from app.catalog import Catalog
from app.core.dead_letter import DeadLetter
from app.core.envelope import Envelope, tenant_of, utcnow
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
from app.worker.tables import Windows, mark_persisted

log = logging.getLogger(__name__)

# Events applied before their writes are sent, while later partitions of the batch are applied.
# Not less: a node has one produce request in flight, so small sends queue round trips one
# behind the other (at a steady 1,000 events/s, a send per partition raised the p50 from 10
# to 15 ms); a batch under this goes in one request at its flush.
SEND_AFTER_EVENTS = 100


def compiler(settings: Settings, schemas: SchemaSet) -> Callable[[Catalog], native.Program | None] | None:
    """What compiles a rulebook for the compiled core, or None when the settings ask for the Python engine."""
    if not settings.worker.compiled:
        log.info("rules engine: Python (SLUICE_WORKER_COMPILED is off)")
        return None

    def compile_rules(catalog: Catalog) -> native.Program | None:
        if not native.AVAILABLE:
            log.warning("rules engine: Python; the compiled core is not built (make builds it with cargo)")
            return None
        program = native.compile_rulebook(catalog, schemas)
        if program is None:
            log.warning("rules engine: Python; the compiled core does not cover these rules (`matches`, for one)")
        else:
            log.info("rules engine: compiled")
        return program

    return compile_rules


def register(
    app: faust.App,
    settings: Settings,
    rulebook: Rulebook[native.Program],
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
    window_s = settings.worker.dedupe_window_s
    # The user records written last, parsed, for either engine (app/worker/recent_users.py).
    recent = RecentUsers(settings.worker.cached_users)
    compiled_users = native.new_users(settings.worker.cached_users) if native.AVAILABLE else None
    last_program = rulebook.program
    event_schema, effect_schema = schemas["event"], schemas["effect"]
    dead_letter_schema = schemas["dead_letter"]

    # Concurrency 1: one batch at a time, each partition in offset order (app/worker/intake.py).
    @app.agent(events, concurrency=1, name="rules")
    async def apply_rules(stream: faust.StreamT[bytes]) -> None:
        changelogs = [table.changelog_topic.get_topic_name(), *([windows.changelog()] if windows else [])]
        timeout_s = settings.producer.publish_timeout_s
        async with (
            Outbox(settings.kafka.bootstrap, timeout_s=timeout_s, compressed=changelogs) as outbox,
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
                # The next batch is applied while this one's acks are out; the Intake commits this
                # batch's offsets only once everything it wrote is in Kafka.
                records.writing(written(await outbox.dispatch(), len(batch), started, tally, spans))

    async def written(
        acks: Awaitable[dict[tuple[str, int], int]],
        events: int,
        started: float,
        tally: Tally | None,
        spans: list[Span],
    ) -> None:
        """What follows a batch's acks: where recovery resumes, the batch's metrics, its spans' end."""
        flushed = await acks
        mark_persisted(table, flushed)
        if windows is not None:
            windows.flushed(flushed)
        if tally is not None:
            tally.export(events, time.perf_counter() - started, time.time())
        tracing.end(spans)

    def apply_partition(messages: list[Message], outbox: Outbox, tally: Tally | None, spans: list[Span]) -> None:
        partition, generation = messages[0].partition, messages[0].generation_id
        db = faust_compat.partition_db(table, partition)
        now = utcnow()
        program = rulebook.program
        nonlocal recent, compiled_users, last_program
        if (program is None) != (last_program is None):
            # The engine changed with a reload of the rules: the other engine's cache of user
            # records missed what this one wrote meanwhile.
            recent = RecentUsers(settings.worker.cached_users)
            compiled_users = native.new_users(settings.worker.cached_users) if native.AVAILABLE else None
        last_program = program
        if program is None:
            batch = ledger.Batch(db.get, now=now, dedupe_window_s=window_s, known=recent.of(generation))
            for message in messages:
                apply_one(batch, message, outbox, tally, spans)
            write(partition, db, now, chain(batch.entries, batch.users), outbox, len(messages))
            recent.keep(batch.user_records)
            return
        assert compiled_users is not None  # rules are compiled only where the extension is built
        compiled = native.new_batch(
            program, db.get, now=now, dedupe_window_s=window_s, known=compiled_users.of(generation)
        )
        for message in messages:
            apply_compiled(compiled, message, outbox, spans)
        if tally is not None:
            tally.add(*compiled.tally())  # counted by the compiled core as it stepped: no Python an event
        write(partition, db, now, chain(compiled.entries, compiled.users), outbox, len(messages))
        compiled_users.keep(compiled)

    def apply_compiled(batch: native.Batch, message: Message, outbox: Outbox, spans: list[Span]) -> None:
        stepped = batch.step(cast(bytes, message.value), message.topic, message.offset)
        if stepped is None:  # bytes it cannot read, or a topic without rules: the Python path says why
            refuse(message, outbox)
            return
        _, effect, reply, key, slug, _ = stepped
        if effect is None and reply is None:
            return
        trace = child_trace(message, tenant_of(key), slug, spans)
        if effect is not None:
            outbox.add(topology.effects, message.partition, key, effect, trace)
        if reply is not None:
            outbox.add(topology.replies, message.partition, key, reply, trace)

    def apply_one(
        batch: ledger.Batch, message: Message, outbox: Outbox, tally: Tally | None, spans: list[Span]
    ) -> None:
        value = cast(bytes, message.value)  # raw values (intake.RAW)
        try:
            envelope = Envelope.decode(event_schema, value)
            spec = rulebook[envelope.topic]
        except (SchemaError, KeyError):
            refuse(message, outbox)
            return
        result = batch.step(
            envelope,
            source_topic=message.topic,
            offset=message.offset,
            rules=spec.rules,
            rules_version=spec.rules_version,
        )
        if tally is not None:
            if result.outcome is ledger.Outcome.APPLIED:
                fired = result.effect["rules_fired"] if result.effect is not None else ()
                tally.applied_one(envelope.topic, fired, envelope.received_at.timestamp())
            elif result.outcome is ledger.Outcome.REDELIVERED:
                tally.redelivered_one(envelope.received_at.timestamp())
            else:
                tally.duplicates += 1
        if result.effect is None and result.reply is None:
            return
        trace = child_trace(message, envelope.tenant, envelope.topic, spans)
        # The effect's key is the event's, so it lands in the same partition number.
        if result.effect is not None:
            outbox.add(topology.effects, message.partition, envelope.key, effect_schema.encode(result.effect), trace)
        if result.reply is not None:
            outbox.add(topology.replies, message.partition, envelope.key, effect_schema.encode(result.reply), trace)

    def child_trace(message: Message, tenant: str, slug: str, spans: list[Span]) -> list[tuple[str, bytes]] | None:
        # What an event writes is a child span of the event's: the trace goes on to subscribers.
        if not tracing.exporting:
            return child_headers(message.headers)
        span = tracing.start(
            "sluice apply",
            from_kafka(message.headers),
            kind=SpanKind.CONSUMER,
            attributes={"sluice.tenant": tenant, "sluice.topic": slug},
        )
        spans.append(span)
        return to_kafka(span)

    def refuse(message: Message, outbox: Outbox) -> None:
        """Dead-letter a record the worker cannot apply, with the reason its decode or lookup gives."""
        value = cast(bytes, message.value)
        error: SluiceError
        try:
            rulebook[Envelope.decode(event_schema, value).topic]
        except SchemaError as exc:
            error = exc
        except KeyError as exc:
            error = SchemaError(f"unknown topic {exc}")
        else:  # pragma: no cover  (the compiled core refused what the Python engine reads: a bug to see)
            error = SchemaError("the compiled core could not apply this event")
        letter = DeadLetter.of(
            error, received_at=utcnow(), stage="worker", source=message.topic, body=value, tenant=None
        )
        outbox.add(
            topology.dead_letters, message.partition, message.key or b"", dead_letter_schema.encode(letter.to_record())
        )
        log.warning("dead-lettered %s[%d]@%d: %s", message.topic, message.partition, message.offset, error)

    def write(
        partition: int, db: Any, now: datetime, written: Iterable[tuple[bytes, bytes]], outbox: Outbox, events: int
    ) -> None:
        # RocksDB here and now, the changelog with the batch. Entries before users: see
        # app/ledger.py for why that order survives any crash.
        # One RocksDB write for them all: a put each was a twelfth of the worker's time.
        changelog = table.changelog_topic.get_topic_name()
        writes = rocksdict.WriteBatch(raw_mode=True)
        # Twice the batch: the sweep goes round faster than entries are added (app/worker/sweep.py).
        # Its deletes come first, so an expired entry this batch writes afresh is kept.
        for key in sweep.step(partition, db, budget=2 * events, now=now, dedupe_window_s=window_s):
            writes.delete(key)
            outbox.add(changelog, partition, key, None)  # a tombstone: compaction frees it in Kafka too
        records = list(written)
        put = writes.put
        for key, value in records:
            put(key, value)
        outbox.extend(changelog, partition, records)
        db.write(writes)
