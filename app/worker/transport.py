"""faust's aiokafka transport with the consumer's fetch wait set by Sluice, and records handed on a fetch at a time."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable
from typing import Any, cast

import aiokafka
import faust
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, Message, TransportT
from mode import Service, ServiceT


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: driver.Transport) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka reads it when the consumer starts, which is after this; faust passes no setting through.
        consumer._fetch_max_wait_ms = self.app.fetch_max_wait_ms  # type: ignore[attr-defined]
        return consumer


class Inbox:
    """The records of some topics, handed from the fetch loop straight to the one reader of them.

    faust hands each record to its conductor, which makes an event of it and puts it on the
    agent's channel queue, with flow-control and pressure checks per record: a tenth of the
    worker's time. An Intake (app/worker/intake.py) takes the records as fetched instead.
    The fetch loop waits while the inbox holds `capacity` records, until half are taken.
    """

    def __init__(self, capacity: int) -> None:
        self._records: deque[Message] = deque()
        self._last: dict[TP, tuple[int | None, int]] = {}  # (generation, offset) of the last record put, per partition
        self._capacity = capacity
        self._arrived = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._closed = False

    def put(self, message: Message) -> bool:
        """Keep the record; False if the inbox is full now, and the fetch loop should wait for `room`."""
        if self._closed:
            return True  # its reader is gone; its successor starts from the committed offsets
        self._records.append(message)
        self._last[message.tp] = (message.generation_id, message.offset)
        self._arrived.set()
        if len(self._records) >= self._capacity:
            self._room.clear()
            return False
        return True

    def last_put(self, tp: TP, generation: int | None) -> int | None:
        """The offset of the last record of `tp` put here in `generation` since the last `forget`."""
        last = self._last.get(tp)
        return last[1] if last is not None and last[0] == generation else None

    def forget(self, tp: TP) -> None:
        """`tp` was sought: what was put before says nothing of what the fetch loop reads next."""
        self._last.pop(tp, None)

    async def room(self) -> None:
        await self._room.wait()

    async def take(self, most: int) -> list[Message]:
        """At least one record, at most `most`, in the order fetched; waits for the first."""
        while not self._records:
            self._arrived.clear()
            await self._arrived.wait()
        return self.take_nowait(most)

    def take_nowait(self, most: int) -> list[Message]:
        records = self._records
        taken = [records.popleft() for _ in range(min(most, len(records)))]
        if len(records) <= self._capacity // 2:
            self._room.set()
        return taken

    def close(self) -> None:
        """Its reader stops: the fetch loop must not wait for it to make room."""
        self._closed = True
        self._records.clear()
        self._room.set()


def route(app: faust.App, topics: Iterable[str], inbox: Inbox | None) -> None:
    """Hand the records of `topics` to `inbox` from now on (None: to faust's conductor again)."""
    consumer = app.consumer
    if not isinstance(consumer, _Consumer):
        raise TypeError("the app's consumer is not Sluice's: build the app with app.worker.transport.App")
    for topic in topics:
        if inbox is None:
            consumer.inboxes.pop(topic, None)
        else:
            consumer.inboxes[topic] = inbox


class _Consumer(driver.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.inboxes: dict[str, Inbox] = {}

    async def _seek(self, partition: TP, offset: int) -> None:
        # faust's calls aiokafka's seek from the main thread, and that completes futures of the
        # consumer thread's loop (the position and fetch waiters) without waking it, racing its
        # rebalances. In the thread, as faust's seek_wait does, but without waiting for a position.
        thread = self._thread
        await thread.call_thread(thread._ensure_consumer().seek, partition, offset)

    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher: ServiceT) -> None:  # pragma: no cover  (faust's own is too)
        """faust's fetch loop, but one `wait_first` per fetch instead of one per record.

        faust races each record's delivery against a flow suspension with `wait_first`, which
        makes four tasks per record: in the worker's profile that was a seventh of its time. Here
        a fetch's records are handed on in one task raced the same way; a suspension, a new
        consumer generation or a stop ends the delivery between records, as faust's own would.
        Records of a routed topic go to its inbox, the others to faust's conductor.
        """
        callback = self.callback
        inbox_of = self.inboxes.get
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        acks_enabled_for = self.app.topics.acks_enabled_for

        async def deliver(records: list[tuple[TP, Message]], generation: int) -> None:
            for n, (tp, message) in enumerate(records, 1):
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    return
                if n % 100 == 0:
                    await asyncio.sleep(0)  # as faust: let health checks and timers in
                offset = message.offset
                read = get_read_offset(tp)
                if read is not None and offset < read:
                    continue  # faust drops what comes below the last offset it handed on
                if read and offset - read > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, read + 1, offset)
                inbox = inbox_of(message.topic)
                if inbox is not None:
                    set_read_offset(tp, offset)
                    if not inbox.put(message):
                        await inbox.room()
                    continue
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


class App(faust.App):
    """faust.App whose consumer waits at most `fetch_max_wait_ms` for a fetch.

    aiokafka sends a node no new fetch while one is in flight, and leaves out of a fetch the
    partitions whose records it still holds. A fetch of only quiet partitions then waits the
    whole fetch wait, and every busy partition behind it waits too: with faust's 1.5 s, a
    steady 1,000 events/s settled into a backlog of 1.2 to 1.6 s that never drained (issue 4).
    """

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        return _Transport(self.conf.broker_consumer, self, loop=self.loop)
