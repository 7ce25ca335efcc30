"""Fetch sessions: a fetch names only the partitions that changed, and nothing is lost or read twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.protocol.fetch import FetchRequest, FetchRequest_v4, FetchRequest_v11

from app.delivery.dispatcher import Dispatcher
from app.delivery.parking import Parking
from app.delivery.queues import Queues
from app.delivery.registry import Registry
from app.delivery.router import Router
from app.delivery.webhook import sending
from app.kafka import fetch_sessions
from app.kafka.fetch_sessions import LAST_EPOCH, FetchSessions, Session, SessionFetch
from app.worker.main import build_app
from tests.support.deployments import offline
from tests.support.topics import new_topic

MAX = 1024


def fetch(*partitions: tuple[str, int, int]) -> FetchRequest:
    """aiokafka's fetch of (topic, partition, offset)s, as its fetcher builds one."""
    topics: dict[str, list[tuple[int, int, int]]] = {}
    for topic, partition, offset in partitions:
        topics.setdefault(topic, []).append((partition, offset, MAX))
    return FetchRequest(100, 1, 50_000_000, 0, list(topics.items()))


def answer(session_id: int, error_code: int = 0, version: int = 11) -> Any:
    return SimpleNamespace(API_VERSION=version, error_code=error_code, session_id=session_id)


def named(request: SessionFetch) -> set[tuple[str, int, int]]:
    """The partitions a fetch puts on the wire, with their offsets."""
    struct = request.build(FetchRequest_v11)
    return {(topic, p[0], p[2]) for topic, partitions in struct.topics for p in partitions}


def test_a_session_starts_with_every_partition_and_then_names_only_what_changed() -> None:
    session = Session()
    first, wanted = session.request(fetch(("a", 0, 5), ("a", 1, 9), ("b", 0, 0)))
    struct = first.build(FetchRequest_v11)
    assert (struct.session_id, struct.session_epoch) == (0, 0)  # asks for a session
    assert named(first) == {("a", 0, 5), ("a", 1, 9), ("b", 0, 0)}
    session.answered(answer(77), wanted)

    second, wanted = session.request(fetch(("a", 0, 7), ("a", 1, 9), ("b", 0, 0)))
    struct = second.build(FetchRequest_v11)
    assert (struct.session_id, struct.session_epoch) == (77, 1)
    assert named(second) == {("a", 0, 7)}  # read past 5: its new offset; the rest the broker holds
    assert struct.forgotten_topics_data == []
    # aiokafka reads the offset of each answered partition from the fetch's topics: all of them.
    assert second.topics == [("a", [(0, 7, MAX), (1, 9, MAX)]), ("b", [(0, 0, MAX)])]
    session.answered(answer(77), wanted)

    third, wanted = session.request(fetch(("a", 0, 7), ("b", 0, 0)))  # a-1 paused
    struct = third.build(FetchRequest_v11)
    assert (struct.session_id, struct.session_epoch) == (77, 2)
    assert named(third) == set()
    assert struct.forgotten_topics_data == [("a", [1])]
    session.answered(answer(77), wanted)

    fourth, _ = session.request(fetch(("a", 0, 7), ("a", 1, 9), ("b", 0, 0)))  # resumed
    assert named(fourth) == {("a", 1, 9)}


@pytest.mark.parametrize(
    ("response", "closed"),
    [
        (answer(0, error_code=70), 77),  # FETCH_SESSION_ID_NOT_FOUND (an error names no session)
        (answer(0, error_code=71), 77),  # INVALID_FETCH_SESSION_EPOCH
        (answer(0), 0),  # the broker's session cache is full: no session made
        (answer(77, version=6), 0),  # a broker without sessions
    ],
)
def test_a_session_the_broker_drops_or_never_makes_starts_over_with_every_partition(response: Any, closed: int) -> None:
    session = Session()
    _, wanted = session.request(fetch(("a", 0, 5), ("a", 1, 9)))
    session.answered(answer(77), wanted)
    _, wanted = session.request(fetch(("a", 0, 5), ("a", 1, 9)))
    session.answered(response, wanted)
    again, wanted = session.request(fetch(("a", 0, 5), ("a", 1, 9)))
    struct = again.build(FetchRequest_v11)
    # A whole fetch (epoch 0); naming the session given up closes it on the broker.
    assert (struct.session_id, struct.session_epoch) == (closed, 0)
    assert named(again) == {("a", 0, 5), ("a", 1, 9)}
    session.answered(answer(78), wanted)
    assert (session.id, session.epoch) == (78, 1)


def test_the_epoch_goes_back_to_one_after_its_last_value() -> None:
    session = Session(id=77, epoch=LAST_EPOCH, held={("a", 0): (5, MAX)})
    request, wanted = session.request(fetch(("a", 0, 5)))
    assert request.build(FetchRequest_v11).session_epoch == LAST_EPOCH
    session.answered(answer(77), wanted)
    assert session.epoch == 1


def test_a_broker_without_sessions_gets_the_whole_fetch() -> None:
    session = Session(id=77, epoch=3, held={("a", 0): (5, MAX)})
    request, _ = session.request(fetch(("a", 0, 5), ("a", 1, 2)))
    struct = request.build(FetchRequest_v4)
    assert struct.topics == [("a", [(0, 5, MAX), (1, 2, MAX)])]


async def test_a_fetch_that_fails_or_is_cancelled_drops_the_session_and_others_pass_through() -> None:
    calls: list[Any] = []
    failing = True

    async def send(node_id: int, request: Any, **kwargs: Any) -> Any:
        calls.append(request)
        if failing:
            raise ConnectionError("gone")
        return answer(77)

    sessions = FetchSessions(send)
    sessions.session(1).id, sessions.session(1).epoch = 77, 4
    with pytest.raises(ConnectionError):
        await sessions(1, fetch(("a", 0, 5)))
    # The next fetch is a whole one, which closes session 77.
    assert (sessions.session(1).id, sessions.session(1).epoch, sessions.session(1).busy) == (77, 0, False)
    failing = False
    other = SimpleNamespace()
    assert await sessions(1, other) == answer(77)
    assert calls[-1] is other  # not a fetch: sent as it is


async def test_a_second_fetch_to_a_broker_at_once_goes_whole_without_the_session() -> None:
    release = asyncio.Event()
    sent: list[Any] = []

    async def send(node_id: int, request: Any, **kwargs: Any) -> Any:
        sent.append(request)
        await release.wait()
        return answer(77)

    sessions = FetchSessions(send)
    first = asyncio.create_task(sessions(1, fetch(("a", 0, 5))))
    await asyncio.sleep(0)  # the first is in flight
    second = fetch(("a", 0, 5))
    release.set()
    await sessions(1, second)
    await first
    assert isinstance(sent[0], SessionFetch) and sent[1] is second
    assert sessions.session(1).id == 77


class Recorded:
    """The fetches a consumer's sessions put on the wire: how many partitions each names."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self.sessions = fetch_sessions.attach(consumer)
        self.fetches: list[tuple[bool, int, int]] = []  # within a session (not a whole fetch); named; answered
        self.whole: list[tuple[int, int]] = []  # each whole fetch's session id (the one it closes), and the new one
        inner = self.sessions._send

        async def send(node_id: int, request: Any, **kwargs: Any) -> Any:
            response = await inner(node_id, request, **kwargs)
            if isinstance(request, SessionFetch):
                struct = request.build(FetchRequest_v11)
                self.fetches.append(
                    (
                        struct.session_epoch != 0,
                        sum(len(partitions) for _, partitions in struct.topics),
                        sum(len(partitions) for _, partitions in response.topics),
                    )
                )
                if struct.session_epoch == 0:
                    self.whole.append((struct.session_id, response.session_id))
            return response

        self.sessions._send = send


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await producer.start()
    try:
        yield producer
    finally:
        await producer.stop()


async def read(consumer: AIOKafkaConsumer, count: int, into: dict[TopicPartition, list[bytes]]) -> None:
    while sum(len(values) for values in into.values()) < count:
        for tp, records in (await consumer.getmany(timeout_ms=200)).items():
            into.setdefault(tp, []).extend(record.value for record in records if record.value is not None)


async def test_a_consumer_in_a_session_reads_every_record_once_in_order_through_pauses_and_a_lost_session(
    kafka_bootstrap: str, producer: AIOKafkaProducer
) -> None:
    quiet = [await new_topic(kafka_bootstrap, "fs-quiet", 4) for _ in range(4)]
    busy = await new_topic(kafka_bootstrap, "fs-busy", 4)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100
    )
    recorded = Recorded(consumer)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for topic in [*quiet, busy] for p in range(4)]
        consumer.assign(partitions)
        got: dict[TopicPartition, list[bytes]] = {}
        reading = asyncio.create_task(read(consumer, 300, got))
        for n in range(300):
            if n == 100:  # a partition paused, written to, then resumed: forgotten, then named again
                consumer.pause(TopicPartition(busy, 0))
            if n == 150:
                consumer.resume(TopicPartition(busy, 0))
            if n == 200:  # the broker drops the session (a wrong epoch): the next fetch starts a new one
                node = next(iter(recorded.sessions._sessions))
                recorded.sessions.session(node).epoch += 5
            await producer.send_and_wait(busy, b"%d" % n, partition=n % 2)
            await asyncio.sleep(0.002)
        await asyncio.wait_for(reading, 30)
    finally:
        await consumer.stop()
    assert got[TopicPartition(busy, 0)] == [b"%d" % n for n in range(0, 300, 2)]
    assert got[TopicPartition(busy, 1)] == [b"%d" % n for n in range(1, 300, 2)]
    assert set(got) == {TopicPartition(busy, 0), TopicPartition(busy, 1)}
    # Two sessions: the first, and the one after the lost one. Within them each fetch named and
    # got back at most the two partitions written to, of the 20.
    fetches = recorded.fetches
    assert sum(1 for within, _, _ in fetches if not within) == 2, fetches
    (none, first), (closed, second) = recorded.whole
    assert none == 0 and closed == first and second not in (0, first)  # the lost session named, to close it
    assert all(named <= 2 and answered <= 2 for within, named, answered in fetches if within), fetches
    assert sum(1 for within, _, _ in fetches if within) > 100  # nearly every fetch


async def test_the_consumers_that_read_many_partitions_fetch_in_sessions(tmp_path: Path) -> None:
    """The worker's (every topic's events), the webhook router's (events and effects) and the
    webhook dispatcher's (every subscription's queue)."""
    deployment = offline(tmp_path)
    settings = deployment.settings
    app = build_app(deployment)
    worker = cast(Any, app.consumer)._thread._create_worker_consumer(app.transport)
    registry = Registry.of(deployment)
    queues = Queues(settings.kafka.bootstrap, deployment.topology)
    router = Router(settings, deployment.topology, deployment.schemas, registry, queues)
    parking = Parking(settings.kafka.bootstrap, deployment.topology)
    async with sending(settings.delivery) as sender:
        dispatcher = Dispatcher(settings, registry, sender, parking, queues)
    consumers = (worker, router._consumer, dispatcher._consumer)
    try:
        for consumer in consumers:
            assert isinstance(consumer._client.send, FetchSessions)
    finally:  # never started: closed, so they leave no warnings
        for client in (*consumers, router._producer):
            await client.stop()
