"""The fetch plan: what aiokafka's own would plan, in every partition state, and a consumer on it reads everything."""

from __future__ import annotations

import asyncio
import random
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.client import AIOKafkaClient
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.consumer.subscription_state import Assignment

from app.kafka import fetch_plan
from tests.support.topics import new_topic

STATES = ("fetchable", "no position", "paused", "records waiting", "records taken")


class Waiting:
    """A partition's fetched records not yet taken, as the fetcher keeps them: with a backoff or none."""

    def __init__(self, backoff: float) -> None:
        self.backoff = backoff

    def calculate_backoff(self) -> float:
        return self.backoff


def fetcher_of(client: AIOKafkaClient, records: dict[Any, Waiting], in_flight: set[int]) -> Any:
    """An object with what both plans read of a fetcher: aiokafka's method runs on it unchanged."""
    fetcher = SimpleNamespace(
        _client=client,
        _records=records,
        _in_flight=in_flight,
        _preferred_read_replica={},
        _max_partition_fetch_bytes=1024,
        _fetch_max_wait_ms=100,
        _fetch_min_bytes=1,
        _fetch_max_bytes=50_000_000,
        _isolation_level=0,
        _client_rack=None,
        _fetcher_timeout=0.2,
    )
    fetcher._select_read_replica = lambda tp: Fetcher._select_read_replica(fetcher, tp)
    return fetcher


def comparable(planned: Any) -> tuple[Any, ...]:
    """A plan with the orders that carry no meaning taken out (aiokafka shuffles each fetch's partitions)."""
    requests, resets, backoff, invalid, resumes = planned
    fetches = {
        node: sorted((topic, *partition) for topic, partitions in request.topics for partition in partitions)
        for node, request in requests
    }
    settings = {
        node: (r._max_wait_ms, r._min_bytes, r._max_bytes, r._isolation_level, r._rack_id) for node, r in requests
    }
    return (
        fetches,
        settings,
        {node: sorted(tps) for node, tps in resets.items()},
        backoff,
        invalid,
        sorted(map(id, resumes)),
    )


async def test_the_plan_is_aiokafkas_in_every_partition_state(kafka_bootstrap: str) -> None:
    topics = [await new_topic(kafka_bootstrap, "fp", 4) for _ in range(3)]
    client = AIOKafkaClient(bootstrap_servers=kafka_bootstrap)
    await client.bootstrap()
    try:
        await client.set_topics(topics)
        known = [TopicPartition(topic, p) for topic in topics for p in range(4)]
        assert {client.cluster.leader_for_partition(tp) for tp in known} == {1}
        unknown = [TopicPartition("fp-no-such-topic", p) for p in range(2)]  # no leader known
        shown, planned = set(), 0
        for seed in range(300):
            rng = random.Random(seed)
            tps = rng.sample(known, rng.randint(1, len(known))) + rng.sample(unknown, rng.randint(0, 1))
            assignment = Assignment(tps)
            records: dict[Any, Waiting] = {}
            for tp in tps:
                state, kind = assignment.state_value(tp), rng.choices(STATES, weights=(20, 1, 3, 1, 3))[0]
                shown.add(kind)
                if kind != "no position":
                    state.seek(rng.randint(0, 1000))
                if kind == "paused":
                    state.pause()
                elif kind == "records waiting":
                    records[tp] = Waiting(rng.choice([0.05, 0.1]))
                elif kind == "records taken":
                    records[tp] = Waiting(0)
            in_flight = {1} if rng.random() < 0.2 else set()
            fetcher = fetcher_of(client, records, in_flight)
            ours = fetch_plan.plan(fetcher, assignment)
            theirs = Fetcher._get_actions_per_node(fetcher, assignment)
            assert comparable(ours) == comparable(theirs), (seed, tps)
            planned += bool(ours[0])
        assert shown == set(STATES)
        assert 50 < planned < 300  # some plans fetch, some do not
    finally:
        await client.close()


async def test_a_consumer_on_the_plan_reads_every_record_once_in_order_through_a_pause_and_hears_of_each_answer(
    kafka_bootstrap: str,
) -> None:
    topic = await new_topic(kafka_bootstrap, "fp-read", 4)
    quiet = [await new_topic(kafka_bootstrap, "fp-quiet", 4) for _ in range(2)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", fetch_max_wait_ms=100
    )
    answered: list[int] = []  # at each answer with records: how many partitions' records wait in the fetcher

    async def fetched(fetcher: Any) -> None:
        answered.append(len(fetcher._records))

    fetch_plan.attach(consumer, fetched)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
    await consumer.start()
    await producer.start()
    try:
        assert consumer._fetcher._get_actions_per_node.__qualname__.startswith("attach")
        consumer.assign([TopicPartition(t, p) for t in [topic, *quiet] for p in range(4)])
        got: dict[int, list[int]] = {}

        async def read() -> None:
            while sum(map(len, got.values())) < 400:
                for tp, batch in (await consumer.getmany(timeout_ms=200)).items():
                    got.setdefault(tp.partition, []).extend(int(r.value or b"") for r in batch)

        reading = asyncio.create_task(read())
        for n in range(400):
            if n == 150:
                consumer.pause(TopicPartition(topic, 0))
            if n == 250:
                consumer.resume(TopicPartition(topic, 0))
            await producer.send_and_wait(topic, str(n).encode(), partition=n % 4)
        await asyncio.wait_for(reading, 30)
        assert got == {p: list(range(p, 400, 4)) for p in range(4)}
        assert answered and all(answered)  # called as each answer with records came, the records there
    finally:
        await producer.stop()
        await consumer.stop()
