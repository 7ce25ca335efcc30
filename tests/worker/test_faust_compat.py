"""The worker's Kafka consumer: its fetch wait from the settings, and its fetch loop (one wait per fetch)."""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

import faust
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord
from faust.types import TP, Message

from app.worker import faust_compat
from app.worker.faust_compat import route
from app.worker.inbox import Inbox
from app.worker.main import build_app
from tests.support.deployments import offline
from tests.support.topics import new_topic
from tests.worker.inboxes import put, taken


async def test_the_consumer_waits_as_long_as_the_setting_says(tmp_path: Path) -> None:
    deployment = offline(tmp_path, SLUICE_WORKER_FETCH_MAX_WAIT_MS="37")
    app = build_app(deployment)
    # The aiokafka consumer faust's consumer service would start; building it connects to nothing.
    thread = cast(Any, app.consumer)._thread
    consumer = thread._create_worker_consumer(app.transport)
    assert consumer._fetch_max_wait_ms == 37


class Fetcher:
    """What the consumer's fetch loop asks of faust's Fetcher service: whether it has stopped."""

    def __init__(self) -> None:
        self._stopped = asyncio.Event()


def message(topic: str, offset: int) -> Message:
    return Message(topic, 0, offset, 0.0, 0, [], b"k", b"v", None, generation_id=0)


def fetches(fetcher: Fetcher, batches: list[list[Message]]) -> Callable[..., AsyncIterator[Any]]:
    """A stand-in for the consumer's getmany: each call yields the next fetch's records; then the fetcher stops."""
    pending = list(batches)

    async def getmany(timeout: float) -> AsyncIterator[Any]:
        if not pending:
            fetcher._stopped.set()
            return
        for record in pending.pop(0):
            yield record.tp, record

    return getmany


async def drain(
    tmp_path: Path, batches: list[list[int]], stop_flow_at: int | None = None, waits: list[int] | None = None
) -> list[int]:
    """The offsets the fetch loop hands on for these fetches; `waits` gets one item per wait_first."""
    app = build_app(offline(tmp_path))
    consumer = cast(Any, app.consumer)
    fetcher = Fetcher()
    consumer.getmany = fetches(fetcher, [[message("t", offset) for offset in batch] for batch in batches])
    delivered: list[int] = []
    wait_first = consumer.wait_first

    async def counted(*coros: Any, **kwargs: Any) -> Any:
        if waits is not None:
            waits.append(len(delivered))
        return await wait_first(*coros, **kwargs)

    consumer.wait_first = counted

    async def callback(message: Message) -> None:
        delivered.append(message.offset)
        if message.offset == stop_flow_at:
            consumer.stop_flow()  # a rebalance begins

    consumer.callback = callback
    await asyncio.wait_for(consumer._drain_messages(fetcher), timeout=5)
    return delivered


async def test_fetched_records_are_handed_on_in_order_with_one_wait_per_fetch(tmp_path: Path) -> None:
    # faust's own loop waits once per record, four tasks each: a seventh of the worker's time.
    waits: list[int] = []
    assert await drain(tmp_path, [[0, 1, 2], [3, 4]], waits=waits) == [0, 1, 2, 3, 4]
    assert waits == [0, 3]


async def test_records_below_the_last_handed_on_are_dropped_as_faust_drops_them(tmp_path: Path) -> None:
    assert await drain(tmp_path, [[5, 6], [2, 6, 7]]) == [5, 6, 6, 7]


async def test_a_suspended_flow_ends_the_fetch_between_records(tmp_path: Path) -> None:
    assert await drain(tmp_path, [[0, 1, 2, 3]], stop_flow_at=1) == [0, 1]


def consumer_record(topic: str, partition: int, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(topic, partition, offset, 1_700_000_000_250, 0, b"k", b"v", None, 1, 1, [])


def fetched_by(consumer: Any, fetches: list[dict[TP, list[int]]]) -> list[TP]:
    """The consumer's fetches stand in by these (each partition's offsets); the highwater reads, listed."""
    pending = list(fetches)
    highwaters: list[TP] = []

    async def wait_next_records(timeout: float) -> tuple[dict[TP, list[Any]], None]:
        fetch = pending.pop(0)
        return {
            tp: [consumer_record(tp.topic, tp.partition, offset) for offset in offsets] for tp, offsets in fetch.items()
        }, None

    def highwater(tp: TP) -> int:
        highwaters.append(tp)
        return 10

    consumer._wait_next_records, consumer.highwater = wait_next_records, highwater
    return highwaters


async def test_a_fetch_goes_partition_by_partition_routed_ones_into_their_inbox_with_one_highwater_read_each(
    tmp_path: Path,
) -> None:
    # faust reads the highwater and builds a full consumer message for every record.
    app = build_app(offline(tmp_path))
    consumer = cast(Any, app.consumer)
    inbox = Inbox(capacity=100)
    route(app, ["routed"], inbox)
    highwaters = fetched_by(consumer, [{TP("routed", 0): [4, 5, 6], TP("other", 0): [2], TP("routed", 1): [9]}])
    yielded = [(tp, record.offset) for tp, record in [record async for record in consumer.getmany(timeout=1.0)]]
    assert yielded == [(TP("other", 0), 2)]  # to faust's conductor
    runs = inbox.take_runs_nowait(10)
    assert [[(record.tp, record.offset) for record in run] for run in runs] == [
        [(TP("routed", 0), 4), (TP("routed", 0), 5), (TP("routed", 0), 6)],
        [(TP("routed", 1), 9)],
    ]
    assert highwaters == [TP("routed", 0), TP("other", 0), TP("routed", 1)]
    routed = runs[0][0]
    assert isinstance(routed, faust_compat.Record)
    assert (routed.tp, routed.key, routed.value, routed.timestamp) == (TP("routed", 0), b"k", b"v", 1_700_000_000.25)
    assert routed.generation_id == app.consumer_generation_id
    # The Intake commits what it applied: faust's ack of an event made of one changes nothing.
    assert not app.create_event(routed.key, routed.value, routed.headers, routed).ack()
    route(app, ["routed"], None)
    assert consumer.inboxes == {}


async def test_a_partitions_run_below_the_last_handed_on_is_dropped_and_the_rest_put_at_once(tmp_path: Path) -> None:
    app = build_app(offline(tmp_path))
    consumer = cast(Any, app.consumer)
    inbox = Inbox(capacity=100)
    route(app, ["routed"], inbox)
    tp = TP("routed", 0)
    fetched_by(consumer, [{tp: [5, 6]}, {tp: [4, 6, 7]}])
    puts: list[list[int]] = []
    put_many = inbox.put_many

    def counted(tp: TP, messages: list[Message]) -> bool:
        puts.append([record.offset for record in messages])
        return put_many(tp, messages)

    inbox.put_many = counted  # type: ignore[method-assign]
    for _ in range(2):
        assert [record async for record in consumer.getmany(timeout=1.0)] == []
    assert puts == [[5, 6], [6, 7]]  # as faust: below the last offset handed on (6) is dropped
    assert [record.offset for record in taken(inbox.take_runs_nowait(10))] == [5, 6, 6, 7]
    assert inbox.last_put(tp, 0) == 7


async def test_a_full_inbox_holds_the_fetch_until_there_is_room(tmp_path: Path) -> None:
    app = build_app(offline(tmp_path))
    consumer = cast(Any, app.consumer)
    inbox = Inbox(capacity=4)
    route(app, ["routed"], inbox)
    fetched_by(consumer, [{TP("routed", 0): [0, 1, 2, 3, 4], TP("other", 0): [8]}])
    getting = asyncio.create_task(anext(aiter(consumer.getmany(timeout=1.0))))
    await asyncio.sleep(0.01)
    assert not getting.done()  # full: faust's records of the same fetch wait too
    inbox.take_runs_nowait(3)
    tp, record = await asyncio.wait_for(getting, timeout=1)
    assert (tp, record.offset) == (TP("other", 0), 8)


class Answered:
    """What `take_routed` reads of aiokafka's fetcher: the partitions with records waiting, and their taking."""

    def __init__(self, waiting: dict[TP, list[int]]) -> None:
        self._records = waiting
        self.taken: list[set[TP]] = []

    async def fetched_records(self, partitions: set[TP], timeout: float) -> dict[TP, list[Any]]:
        self.taken.append(set(partitions))
        return {tp: [consumer_record(tp.topic, tp.partition, n) for n in self._records.pop(tp)] for tp in partitions}


async def test_an_answers_records_go_into_an_empty_inbox_and_wait_for_fausts_loop_behind_a_busy_one(
    tmp_path: Path,
) -> None:
    app = build_app(offline(tmp_path))
    consumer = cast(Any, app.consumer)
    empty, busy = Inbox(capacity=100), Inbox(capacity=100)
    route(app, ["quiet"], empty)
    route(app, ["loaded"], busy)
    put(busy, message("loaded", 0))  # its reader has records to apply still
    consumer.highwater = lambda tp: 10
    consumer._set_active_tps({TP("quiet", 0), TP("loaded", 0), TP("other", 0)})
    fetcher = Answered({TP("quiet", 0): [3, 4], TP("loaded", 0): [1], TP("other", 0): [7]})
    await consumer.take_routed(fetcher)
    assert fetcher.taken == [{TP("quiet", 0)}]
    assert [record.offset for record in taken(empty.take_runs_nowait(10))] == [3, 4]
    assert set(fetcher._records) == {TP("loaded", 0), TP("other", 0)}  # left for faust's fetch loop


async def test_records_of_a_routed_topic_reach_its_inbox_as_their_fetch_is_answered(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    # faust's fetch loop (its Fetcher service) is not running here: only the answer's hand-off can put them in.
    topic = await new_topic(kafka_bootstrap, "routed", 2)
    app = build_app(offline(tmp_path, SLUICE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap))
    inbox = Inbox(capacity=100)
    route(app, [topic], inbox)
    service = cast(Any, app.consumer)._thread
    await service.start()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        kafka = service._ensure_consumer()
        kafka.assign([TP(topic, 0), TP(topic, 1)])
        cast(Any, app.consumer)._set_active_tps({TP(topic, 0), TP(topic, 1)})  # as faust's rebalance does
        for offset in range(6):
            await producer.send_and_wait(topic, b"v%d" % offset, partition=offset % 2)
        got: dict[int, list[int]] = {0: [], 1: []}

        async def read() -> None:
            while sum(map(len, got.values())) < 6:
                for run in await inbox.take_runs(10):
                    got[run[0].partition] += [record.offset for record in run]

        await asyncio.wait_for(read(), timeout=10)
        assert got == {0: [0, 1, 2], 1: [0, 1, 2]}
    finally:
        await producer.stop()
        await service.stop()


def test_records_are_taken_in_the_runs_they_were_put_in_and_a_run_is_split_at_the_most() -> None:
    inbox = Inbox(capacity=100)
    inbox.put_many(TP("t", 0), [message("t", offset) for offset in range(3)])
    inbox.put_many(TP("t", 1), [Message("t", 1, 8, 0.0, 0, [], b"k", b"v", None, generation_id=0)])
    assert [[record.offset for record in run] for run in inbox.take_runs_nowait(2)] == [[0, 1]]
    assert [[record.offset for record in run] for run in inbox.take_runs_nowait(5)] == [[2], [8]]
    assert inbox.take_runs_nowait(5) == []


async def test_a_full_inbox_holds_the_fetch_loop_until_half_is_taken() -> None:
    inbox = Inbox(capacity=4)
    assert all([put(inbox, message("t", offset)) for offset in range(3)])
    assert not put(inbox, message("t", 3))  # full: the fetch loop waits for room
    waiting = asyncio.create_task(inbox.room())
    await asyncio.sleep(0)
    assert [record.offset for record in taken(inbox.take_runs_nowait(1))] == [0]
    await asyncio.sleep(0)
    assert not waiting.done()  # three left: more than half
    assert [record.offset for record in taken(inbox.take_runs_nowait(1))] == [1]
    await asyncio.wait_for(waiting, timeout=1)


async def test_taking_waits_for_the_first_record_and_a_closed_inbox_never_holds_the_loop() -> None:
    inbox = Inbox(capacity=2)
    taking = asyncio.create_task(inbox.take_runs(10))
    await asyncio.sleep(0)
    assert not taking.done()
    put(inbox, message("t", 7))
    assert [record.offset for record in taken(await asyncio.wait_for(taking, timeout=1))] == [7]
    put(inbox, message("t", 8))
    assert not put(inbox, message("t", 9))
    inbox.close()  # its Intake stopped: whatever is fetched now is refetched by the next one
    await asyncio.wait_for(inbox.room(), timeout=1)
    assert put(inbox, message("t", 10)) and taken(inbox.take_runs_nowait(10)) == []


async def test_the_consumer_runs_on_the_apps_loop_and_its_stop_leaves_the_loops_other_tasks(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    # faust's would run in a thread with a loop of its own, and mode's stop of that thread cancels
    # every task left on its loop: here that loop is the app's.
    app = build_app(offline(tmp_path, SLUICE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap))
    service = cast(Any, app.consumer)._thread
    threads = set(threading.enumerate())
    other = asyncio.create_task(asyncio.sleep(3600))
    await service.start()
    try:
        assert set(threading.enumerate()) == threads
        kafka = service._ensure_consumer()
        assert kafka._client._loop is asyncio.get_running_loop()
        assert isinstance(await service.call_thread(kafka.topics), set)  # called here, not handed over
    finally:
        await service.stop()
    assert not other.done()
    other.cancel()


async def test_the_consumer_plans_its_fetches_with_sluices_plan_and_assigned_is_fausts_assignment(
    tmp_path: Path, kafka_bootstrap: str
) -> None:
    app = build_app(offline(tmp_path, SLUICE_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap))
    service = cast(Any, app.consumer)._thread
    await service.start()
    try:
        kafka = service._ensure_consumer()
        assert kafka._fetcher._get_actions_per_node.__qualname__.startswith("attach")
        assert faust_compat.assigned(app) == set() == app.consumer.assignment()
        kafka.assign([TP("pinned", 0), TP("pinned", 1)])
        assert faust_compat.assigned(app) == {TP("pinned", 0), TP("pinned", 1)} == app.consumer.assignment()
        assert TP("pinned", 1) in faust_compat.assigned(app) and TP("pinned", 2) not in faust_compat.assigned(app)
    finally:
        await service.stop()


# Each private faust touch Sluice relies on, pinned: a faust upgrade that changes one fails here.


async def test_partition_db_is_the_tables_own_rocksdict_for_that_partition(tmp_path: Path) -> None:
    app = build_app(offline(tmp_path))
    options = {"driver": "rocksdict"}
    table = app.Table("pin", default=None, partitions=4, key_type=bytes, value_type=bytes, options=options)
    faust_compat.partition_db(table, 1)[b"k"] = b"v"
    assert faust_compat.partition_db(table, 1)[b"k"] == b"v"
    assert faust_compat.partition_db(table, 2).get(b"k") is None


async def test_set_current_event_is_what_faust_reads_as_the_current_event(tmp_path: Path) -> None:
    app = build_app(offline(tmp_path))
    event = app.create_event(b"k", b"v", [], cast(Message, None))
    faust_compat.set_current_event(event)
    assert faust.current_event() is event


async def test_is_paused_follows_fausts_pause_and_resume(tmp_path: Path) -> None:
    consumer = build_app(offline(tmp_path)).consumer
    tp = TP("pinned", 0)
    consumer.pause_partitions([tp])
    assert faust_compat.is_paused(consumer, tp)
    consumer.resume_partitions([tp])
    assert not faust_compat.is_paused(consumer, tp)


def test_commit_is_fausts_commit_of_explicit_offsets(tmp_path: Path) -> None:
    commit = type(build_app(offline(tmp_path)).consumer)._commit
    assert inspect.iscoroutinefunction(commit)
    assert list(inspect.signature(commit).parameters) == ["self", "offsets"]


async def test_every_topic_faust_creates_gets_the_deployments_min_insync_replicas(tmp_path: Path) -> None:
    deployment = offline(tmp_path, SLUICE_REPLICATION_FACTOR="3", SLUICE_MIN_INSYNC_REPLICAS="2")
    app = build_app(deployment)
    assert app.conf.topic_replication_factor == 3
    transport = cast(Any, app.transport)
    created: list[tuple[str, int, dict[str, Any]]] = []

    async def really_create(owner: Any, client: Any, topic: str, partitions: int, replication: int, **kw: Any) -> None:
        created.append((topic, replication, kw["config"]))

    transport._really_create_topic = really_create
    await transport._create_topic(None, None, "changelog", 4, 3, config={"cleanup.policy": "compact"})
    await transport._create_topic(None, None, "leader", 1, 3, config=None)
    assert created == [
        ("changelog", 3, {"min.insync.replicas": "2", "cleanup.policy": "compact"}),
        ("leader", 3, {"min.insync.replicas": "2"}),
    ]


async def test_a_tables_rocksdb_goes_without_its_log_and_to_disk_when_revoked_or_stopped(tmp_path: Path) -> None:
    app = build_app(offline(tmp_path))
    options = {"driver": "rocksdict"}
    table = app.Table("pin", default=None, partitions=4, key_type=bytes, value_type=bytes, options=options)
    store = cast(Any, table.data)
    assert isinstance(store, faust_compat._Store)
    changelog = table.changelog_topic.get_topic_name()
    for partition in (1, 2):
        faust_compat.partition_db(table, partition)[b"k"] = b"v" * 10_000
    paths = [Path(store.partition_path(partition)) for partition in (1, 2)]

    def on_disk(path: Path) -> tuple[int, int]:
        """Bytes in RocksDB's write-ahead logs, and in its tables."""
        return sum(f.stat().st_size for f in path.glob("*.log")), sum(f.stat().st_size for f in path.glob("*.sst"))

    assert [on_disk(path) for path in paths] == [(0, 0), (0, 0)]  # in the memtables alone
    store.revoke_partitions(table, {TP(changelog, 1)})
    (log_1, tables_1), (_, tables_2) = on_disk(paths[0]), on_disk(paths[1])
    assert (log_1, tables_1 > 0, tables_2) == (0, True, 0)
    await store.stop()
    assert on_disk(paths[1])[1] > 0
