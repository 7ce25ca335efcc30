"""Every touch of faust-streaming's private internals, in one place, each pinned by tests/worker/test_faust_compat.py.

faust gives no public handle for these, and a faust upgrade may change any of them; the tests
fail here first. What Sluice needs of each:

- the transport: its consumer on the app's event loop rather than a thread of its own, a fetch
  wait set by Sluice, a fetch loop that hands a fetch's records on in one task, and the records
  of routed topics put into an Inbox as soon as their fetch is answered;
- `set_current_event`: tables write to the partition of faust's current event;
- `partition_db`: a table partition's rocksdict, for reads and writes without faust's store layers;
- `assigned`, `is_paused` and `commit`: the consumer's assigned and paused sets and its commit
  of explicit offsets;
- the transport's `_create_topic`: min.insync.replicas on every topic faust creates;
- `recovery_remaining`: the changelog records a running state recovery has yet to replay;
- `Table`: every table's RocksDB written without RocksDB's write-ahead log.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from collections.abc import Set as AbstractSet
from typing import Any, cast

import aiokafka
import faust
import rocksdict
from faust.stores import rocksdb as rocksdb_store
from faust.streams import _current_event
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, CollectionT, EventT, Message, StoreT, TransportT
from mode import Service, ServiceT
from mode.utils.futures import maybe_async
from yarl import URL

from app.kafka import fetch_plan, fetch_sessions
from app.worker.inbox import Inbox


class _ConsumerOnLoop(driver.AIOKafkaConsumerThread):
    """faust's consumer "thread", run on the app's own event loop: no thread of its own.

    faust runs its aiokafka consumer in a thread with a loop of its own, and every fetch, seek and
    commit is a call handed across to it and an answer handed back. On a busy machine each hand-over
    waits for the other thread to get a core and the GIL: at a steady 1,000 events/s the worker's
    main thread waited for a core for half the time, and its effects' p99 was 4 ms longer than here.
    """

    def __init__(self, consumer: Any, *, loop: asyncio.AbstractEventLoop, **kwargs: Any) -> None:
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # mode's starts a thread that runs `_serve`; here it is a task, and start returns once it serves.
        assert not self._thread_started.is_set()
        self._thread_started.set()
        running = self._thread_running = asyncio.Future(loop=self.parent_loop)
        serving = self._serving = asyncio.ensure_future(self._serve())
        try:
            await asyncio.wait({running, serving}, return_when=asyncio.FIRST_COMPLETED)
            if serving.done():
                serving.result()  # it crashed while starting
        finally:
            self._thread_running = None

    async def stop(self) -> None:
        # mode's joins the thread after Service.stop, which waits for `_serve` to shut down.
        if self._started.is_set():
            await Service.stop(self)
            if self._serving is not None:
                await asyncio.shield(self._serving)

    async def _gather_remaining_tasks(self) -> None:
        return  # mode's cancels every task left on the thread's loop, which here is the app's

    async def on_thread_started(self) -> None:
        return  # mode's starts the queue of calls handed to the thread; here nothing is handed over

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await maybe_async(fun(*args, **kwargs))

    def _create_worker_consumer(self, transport: driver.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it when the consumer starts, which is after this; faust passes no setting through.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        fetch_sessions.attach(consumer)  # a fetch names only the partitions that changed (KIP-227)
        # A fetch is planned without per-partition calls, and routed records are taken as it is answered.
        fetch_plan.attach(consumer, cast(_Consumer, self.consumer).take_routed)
        return consumer


def route(app: faust.App, topics: Iterable[str], inbox: Inbox | None) -> None:
    """Hand the records of `topics` to `inbox` from now on (None: to faust's conductor again)."""
    consumer = app.consumer
    if not isinstance(consumer, _Consumer):
        raise TypeError("the app's consumer is not Sluice's: build the app with app.worker.faust_compat.App")
    for topic in topics:
        if inbox is None:
            consumer.inboxes.pop(topic, None)
        else:
            consumer.inboxes[topic] = inbox


class Record(Message):
    """A fetched record of a routed topic, with what Sluice reads of it: topic, partition, offset,
    key, value, headers, timestamp (seconds), tp and the consumer generation it was fetched in.

    faust's consumer message also fills in sizes and tracking, which only its own stream uses;
    a routed topic's records never reach that stream. Born acked: nothing of faust's may ack one.
    """

    __slots__ = ()

    def __init__(self, tp: TP, record: Any, generation: int) -> None:  # record: aiokafka's ConsumerRecord
        self.tp = tp
        self.topic = record.topic
        self.partition = record.partition
        self.offset = record.offset
        self.timestamp = record.timestamp / 1000.0
        self.headers = record.headers
        self.key = record.key
        self.value = record.value
        self.generation_id = generation
        self.acked = True  # faust's acks are off for these topics (intake.source): the Intake commits


class _Consumer(driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inboxes: dict[str, Inbox] = {}

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerOnLoop(self, loop=self.loop, beacon=self.beacon)

    def assigned(self) -> AbstractSet[tuple[str, int]]:
        """aiokafka's own set of the partitions assigned (its partitions equal faust's TPs).

        faust's `assignment()` copies it into a new set of TPs on each call: the Intake's two
        calls a batch were 4% of the worker's time at 1,000 events/s.
        """
        return cast(AbstractSet[tuple[str, int]], self._thread._ensure_consumer().assignment())

    async def take_routed(self, fetcher: Any) -> None:
        """Right as a fetch is answered: its records of routed topics, into their inboxes.

        Through faust's fetch loop a fetch's records reached the inbox several event-loop turns
        after the answer, and aiokafka fetches nothing more from a broker until they are taken:
        at 1,000 events/s the next fetch went out 1.15 ms (median) after the last answer, and
        nine events in ten came while no fetch waited at the broker. Taken here, the next fetch
        goes out as soon as the fetch loop comes round. aiokafka's `fetcher` calls this.
        """
        routed = self.inboxes
        if not routed or not self.flow_active or self.should_stop:
            return  # faust's fetch loop takes them once the flow is back (the generation may be new)
        active = self._active_partitions
        if active is None:
            active = self._get_active_partitions()
        # Only into an empty inbox: under load its reader has records to apply anyway, and a fetch
        # loop held back until faust's takes them fetches more at a time, for fewer fetches an event.
        wanted = {tp for tp in fetcher._records if tp.topic in routed and tp in active and not len(routed[tp.topic])}
        if not wanted:
            return
        fetched = await fetcher.fetched_records(wanted, timeout=0)
        generation = self.app.consumer_generation_id
        for tp, records in fetched.items():
            tp = TP(tp.topic, tp.partition)
            # A full inbox holds this fetch in flight meanwhile: nothing more is fetched.
            await self._hand_on(routed[tp.topic], tp, records, generation)

    async def _hand_on(self, inbox: Inbox, tp: TP, records: list[Any], generation: int) -> None:
        """Put a fetch's records of routed `tp` into `inbox` at once, as faust hands records on:
        those below the last offset handed on are dropped. Then, if the inbox is full, wait for room.

        Both ways records are taken (an answer's, a fetch loop's) put them in at once, in the
        order aiokafka gives them up, so a partition's records reach its inbox in offset order.
        """
        self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
        run: list[Message] = [Record(tp, record, generation) for record in records]
        read = self._read_offset[tp]
        if read is not None and run and run[0].offset < read:
            run = [message for message in run if message.offset >= read]
        if not run:
            return
        self._read_offset[tp] = run[-1].offset
        if not inbox.put_many(tp, run):
            await inbox.room()

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """faust's getmany, with its per-record work once per partition where it can be, and the
        records of routed topics put into their inboxes rather than yielded.

        faust interleaves partitions record by record, and per record reads the partition's
        highwater (a call into aiokafka) for its monitor and builds a full consumer message: in
        the worker's profile, with the fetch loop around it, about 5 µs an event. Here a fetch's
        records go partition by partition (the fetch loop hands them on together anyway), the
        highwater is read once per partition. The flow and generation checks are made once:
        nothing between the fetch and the last yield awaits, but a full inbox.
        """
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            self.log.dev("getmany called while flow not active. Seek back to committed offsets.")
            try:
                await self.perform_seek()
            except Exception as ex:
                self.log.warning(f"exception performing seek when flow not active {ex}")
            return
        generation = self.app.consumer_generation_id
        buffered = self._buffered_partitions
        track = self.app.monitor.track_tp_end_offset
        to_message = self._to_message
        routed = self.inboxes
        for tp, fetched in records.items():
            if not fetched or not (active_partitions is None or tp in active_partitions or tp in buffered):
                continue
            inbox = routed.get(tp.topic)
            if inbox is not None:
                await self._hand_on(inbox, tp, fetched, generation)
                continue
            track(tp, self.highwater(tp))
            for record in fetched:
                yield tp, to_message(tp, record)

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover  (faust's own is too)
        """faust's fetch loop, but one `wait_first` per fetch instead of one per record.

        faust races each record's delivery against a flow suspension with `wait_first`, which
        makes four tasks per record: in the worker's profile that was a seventh of its time. Here
        a fetch's records are handed on in one task raced the same way; a suspension, a new
        consumer generation or a stop ends the delivery between records, as faust's own would.
        Records of routed topics never come here: `getmany` puts them into their inboxes.
        """
        callback = self.callback
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for

        async def deliver(records: list[tuple[TP, Message]], generation: int) -> None:
            for i, (tp, message) in enumerate(records):
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    return
                if i and not i % 100:
                    await asyncio.sleep(0)  # as faust: let health checks and timers in
                # faust's own per-record bookkeeping: what comes below the last offset it handed on is dropped.
                offset = message.offset
                read = get_read_offset(tp)
                if read is not None and offset < read:
                    continue
                if read and offset - read > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, read + 1, offset)
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                await callback(message)
                set_read_offset(tp, offset)

        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched = self.getmany(timeout=1.0)
                await asyncio.sleep(0)
                if not self.should_stop:
                    records = [record async for record in fetched]
                    if records:
                        generation = self.app.consumer_generation_id
                        await self.wait_first(deliver(records, generation), self.suspend_flow.wait())
                    self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class _Transport(driver.Transport):
    Consumer = _Consumer

    async def _create_topic(
        self, owner: Service, client: aiokafka.AIOKafkaClient, topic: str, partitions: int, replication: int, **kw: Any
    ) -> None:
        # faust creates its own topics (the tables' changelogs, its assignor's leader topic) with
        # the app's replication factor and no min.insync.replicas; a table's extra_topic_configs
        # would reach its changelog but not the leader topic. Every creation passes here.
        wanted = cast(App, self.app).topic_min_insync_replicas
        if wanted:
            kw["config"] = {"min.insync.replicas": str(wanted), **(kw.get("config") or {})}
        await super()._create_topic(owner, client, topic, partitions, replication, **kw)


_WITHOUT_WAL = rocksdict.WriteOptions()
_WITHOUT_WAL.disable_wal = True  # type: ignore[method-assign,assignment]  # a property; the stub has a method


class _Store(rocksdb_store.Store):
    """faust's RocksDB store, written without RocksDB's write-ahead log: a table's changelog is its log.

    Every write to a table goes to its changelog in Kafka too, and the store's persisted
    changelog offset is written after the writes it covers. What RocksDB loses with its
    memtable when the process dies is a tail of its writes, that offset's among them, and
    recovery replays the changelog from the offset that survived. Kafka Streams runs its
    stores so for the same reason. The log cost a write of every value on the event loop,
    and at 10,000 events/s the loop waited up to 0.3 s on a log page the kernel was writing
    back; each memtable flush also synced and deleted a 64 MB log.
    """

    def _open_for_partition(self, partition: int) -> Any:
        db = super()._open_for_partition(partition)
        db.set_write_options(_WITHOUT_WAL)
        return db

    def revoke_partitions(self, table: CollectionT, tps: set[TP]) -> None:
        # faust drops a revoked partition's database unclosed: its memtable goes to disk first, or
        # the next worker to hold the partition here replays that much more of the changelog.
        for tp in tps:
            db = self._dbs.get(tp.partition)
            if db is not None and tp.topic in table.changelog_topic.topics:
                db.flush()
        super().revoke_partitions(table, tps)

    async def stop(self) -> None:
        for db in self._dbs.values():
            db.flush()
        await super().stop()


class Table(faust.Table[Any, Any]):
    """faust's Table on `_Store` when its store is RocksDB (the app's `Table` setting)."""

    def _new_store_by_url(self, url: str | URL) -> StoreT[Any, Any]:
        if URL(url).scheme != "rocksdb":
            return super()._new_store_by_url(url)
        # faust's own construction of a store, with `_Store` for its class
        return _Store(
            url,
            self.app,
            self,
            table_name=self.name,
            key_type=self.key_type,
            key_serializer=self.key_serializer,
            value_serializer=self.value_serializer,
            value_type=self.value_type,
            loop=self.loop,
            options=self.options,
        )


class App(faust.App):
    """faust.App whose consumer waits at most `fetch_max_wait_ms` for a fetch.

    aiokafka sends a node no new fetch while one is in flight, and leaves out of a fetch the
    partitions whose records it still holds. A fetch of only quiet partitions then waits the
    whole fetch wait, and every busy partition behind it waits too: with faust's 1.5 s, a
    steady 1,000 events/s settled into a backlog of 1.2 to 1.6 s that never drained.
    """

    def __init__(self, *args: Any, fetch_max_wait_ms: int, topic_min_insync_replicas: int = 0, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.topic_min_insync_replicas = topic_min_insync_replicas  # 0: the broker's default
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self, loop=self.loop)


def set_current_event(event: EventT[Any]) -> None:
    """Make `event` faust's current event, as its stream would: tables write to its partition."""
    _current_event.set(weakref.ref(event))


def partition_db(table: faust.types.CollectionT, partition: int) -> Any:
    """The rocksdict of one partition of a RocksDB-backed table.

    faust's store layers around it cost a tenth of the agent's time, and Sluice writes the
    changelog itself (the Outbox), so reads and writes go to the partition's database directly.
    """
    return cast(Any, table).data._db_for_partition(partition)


def assigned(app: faust.App) -> AbstractSet[tuple[str, int]]:
    """The partitions assigned now, as `assignment()` without its copy (Sluice's consumer's `assigned`)."""
    consumer = app.consumer
    if not isinstance(consumer, _Consumer):
        raise TypeError("the app's consumer is not Sluice's: build the app with app.worker.faust_compat.App")
    return consumer.assigned()


def is_paused(consumer: Any, tp: TP) -> bool:
    """Has faust paused this partition (flow control, a rebalance, recovery)?"""
    return tp in consumer._paused_partitions


def recovery_remaining(app: faust.App) -> int | None:
    """Changelog records the running state recovery has yet to replay; None when none runs."""
    recovery = cast(Any, app.tables).recovery
    if not recovery.in_recovery:
        return None
    return int(recovery.active_remaining_total())


def commit(consumer: Any, offsets: dict[TP, int]) -> Awaitable[bool]:
    """Commit exactly these offsets through faust's consumer, which holds the group membership."""
    return cast(Awaitable[bool], consumer._commit(offsets))
