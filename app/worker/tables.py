"""The analytics agent: windowed tables in RocksDB with a changelog, a retention sweep, and local queries."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import faust
import orjson
from faust.types import TP, Message, StoreT

from app.analytics import scan
from app.analytics.engine import Batch, Progress
from app.analytics.results import to_wire
from app.analytics.retention import expired_rows
from app.analytics.rows import ROW, meta_key
from app.analytics.spec import TableSpec
from app.avro.schemas import SchemaSet
from app.catalog import Catalog
from app.core.envelope import Envelope, utcnow
from app.core.instants import epoch_ms
from app.errors import SchemaError
from app.kafka.topology import Topology
from app.settings import Settings
from app.worker import faust_compat
from app.worker.outbox import Outbox

log = logging.getLogger(__name__)

TABLE = "analytics"
JSON = "application/json"
SWEEP_BUDGET = 20_000  # rows read per partition per sweep tick: a bounded pause of the event loop


@dataclass(frozen=True)
class Windows:
    """The windowed tables' part of a batch: the rules agent applies each run of events of a
    source partition here too, and writes the rows with its own, through one outbox.

    Not an agent of its own: two agents on the same topics share the group's one committed
    offset per partition, and one would commit past events the other has not applied.
    """

    apply: Callable[[str, int, list[Message], Outbox], None]  # (topic, partition, records, outbox)
    flushed: Callable[[dict[tuple[str, int], int]], None]  # the outbox's flush: where recovery resumes
    changelog: Callable[[], str]  # the rows' changelog topic, which the outbox compresses


def mark_persisted(table: faust.types.TableT[Any, Any], offsets: Mapping[tuple[str, int], int]) -> None:
    """Where recovery resumes replaying `table`'s changelog into RocksDB: the offsets an outbox's flush
    gave, per (topic, partition), of which those of the table's changelog count."""
    changelog = table.changelog_topic.get_topic_name()
    store = cast(StoreT[bytes, bytes], table.data)
    for (topic, partition), offset in offsets.items():
        if topic == changelog:
            store.set_persisted_offset(TP(topic, partition), offset)


def register(
    app: faust.App, settings: Settings, catalog: Catalog, schemas: SchemaSet, topology: Topology
) -> Windows | None:
    """The table, the sweep and the query pages; None when no topic declares a table."""
    sources: dict[str, tuple[TableSpec, ...]] = {
        topology.events[slug]: spec.tables for slug, spec in catalog.items() if spec.tables
    }
    if not sources:
        return None
    tables = catalog.tables()
    # Rows live in the partition of the events that made them (sources are keyed by user), so
    # a group key's windows are spread over partitions; queries gather and merge them.
    table = app.Table(
        TABLE,
        default=None,
        partitions=topology.partitions,
        key_type=bytes,
        value_type=bytes,
        options={"driver": "rocksdict"},
    )
    event_schema = schemas["event"]
    cursors: dict[int, bytes] = {}

    def changelog() -> str:
        name: str = table.changelog_topic.get_topic_name()
        return name

    def flushed(offsets: dict[tuple[str, int], int]) -> None:
        mark_persisted(table, offsets)

    async def flush(outbox: Outbox) -> None:
        flushed(await outbox.flush())

    def apply_run(topic: str, partition: int, messages: list[Message], outbox: Outbox) -> None:
        if topic not in sources:
            return
        now_ms = epoch_ms(utcnow())
        db = faust_compat.partition_db(table, partition)
        batch = Batch(db.get, topic, now_ms)
        for message in messages:
            value = cast(bytes, message.value)  # raw values (intake.RAW)
            try:
                envelope = Envelope.decode(event_schema, value)
            except SchemaError:
                continue  # the rules agent dead-letters it
            batch.apply(envelope, message.offset, sources[topic], value)
        # RocksDB now, the changelog with the batch; rows before the progress record (app/analytics/engine.py).
        for key, value in batch.writes():
            db[key] = value
            outbox.add(changelog(), partition, key, value)
        for late in batch.late:
            assert late.table.late_topic is not None
            outbox.add(settings.kafka.topic(late.table.late_topic), partition, late.key, late.raw)

    def ready_partitions(request: Any = None) -> list[int] | None:
        """The table partitions this worker serves (of those asked for), or None while it rebalances or recovers."""
        if app.rebalancing or app.in_recovery:
            return None
        name = changelog()
        held = {tp.partition for tp in app.assignor.assigned_actives() if tp.topic == name}
        if request is not None and "partitions" in request.query:
            held &= {int(p) for p in request.query["partitions"].split(",") if p}
        return sorted(held)

    async def sweep_windows() -> None:
        """Delete windows past retention, on every partition held: after a restart or a rebalance too."""
        partitions = ready_partitions()
        if not partitions:
            return
        now_ms = epoch_ms(utcnow())
        doomed: dict[int, list[bytes]] = {}
        for partition in partitions:
            db = faust_compat.partition_db(table, partition)
            keys, cursors[partition] = expired_rows(
                db, cursors.get(partition, ROW), budget=SWEEP_BUDGET, tables=tables, now_ms=now_ms
            )
            for key in keys:
                del db[key]
            if keys:
                doomed[partition] = keys
        if not doomed:
            return
        async with Outbox(
            settings.kafka.bootstrap, timeout_s=settings.producer.publish_timeout_s, compressed=[changelog()]
        ) as outbox:
            for partition, keys in doomed.items():
                for key in keys:
                    outbox.add(changelog(), partition, key, None)  # a tombstone: compaction frees it in Kafka too
            await flush(outbox)
        log.info("analytics: swept %d windows past retention", sum(map(len, doomed.values())))

    app.timer(settings.analytics.sweep_s)(sweep_windows)

    @app.page("/analytics/cluster/")
    async def cluster(view: Any, request: Any) -> Any:
        """Which worker (canonical URL) holds which table partitions, as the group's assignment
        says, and that assignment's generation: the newest of the workers' maps is the group's."""
        hosts = app.router.table_metadata(TABLE)
        workers = {url: sorted(p for parts in topics.values() for p in parts) for url, topics in hosts.items()}
        generation = app.consumer_generation_id
        return view.json({"partitions": topology.partitions, "generation": generation, "workers": workers})

    @app.page("/analytics/rows/")
    async def rows(view: Any, request: Any) -> Any:
        """Partial aggregates of this worker's partitions: a key's windows in a range, or one window's keys."""
        partitions = ready_partitions(request)
        if partitions is None:
            return view.json({"error": "rebalancing"}, status=503)
        query = request.query
        spec = tables.get(query.get("table", ""))
        if spec is None:
            return view.json({"error": "no such table"}, status=404)
        tenant = query["tenant"]
        partials: list[scan.Partial] = []
        for partition in partitions:
            db = faust_compat.partition_db(table, partition)
            if "window" in query:
                partials += scan.window_keys(db, tenant, spec, int(query["window"]))
            elif "key" in query:
                group = tuple(orjson.loads(query["key"]))
                partials += scan.windows_of(db, tenant, spec, group, int(query["from"]), int(query["to"]))
            else:
                partials += scan.windows_in(db, tenant, spec, int(query["from"]), int(query["to"]))
        # orjson: a top query's answer holds a partial per key of the table.
        return view.bytes(orjson.dumps({"partitions": partitions, "rows": to_wire(partials)}), content_type=JSON)

    @app.page("/analytics/late/")
    async def late(view: Any, request: Any) -> Any:
        """Late events per table of a tenant, over this worker's partitions."""
        partitions = ready_partitions(request)
        if partitions is None:
            return view.json({"error": "rebalancing"}, status=503)
        tenant = request.query["tenant"]
        counts: dict[str, int] = {}
        for partition in partitions:
            db = faust_compat.partition_db(table, partition)
            for topic in sources:
                progress = Progress.decode(db.get(meta_key(topic)))
                for name, count in progress.late.get(tenant, {}).items():
                    counts[name] = counts.get(name, 0) + count
        return view.json({"partitions": partitions, "late": counts})

    return Windows(apply_run, flushed, changelog)
