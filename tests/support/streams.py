"""Event streams for crash tests: generate them with duplicates, produce them, watch effects, check them.

The checks are what "crash-correct" means for the worker: every unique event id has an
effect, a replayed effect is an identical copy, no effect for an id never sent, and each
user's totals are the fold of the topic's rules over that user's unique events in send order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from random import Random
from types import TracebackType
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from app.avro.schemas import Schema, SchemaSet
from app.core.envelope import Envelope
from app.rules import Fact, Rule, UserState, apply

# Weighted event types: `order_placed` and `orders` earn coins on the orders topic, the others only count.
TYPES = ("order_placed", "order_placed", "orders", "order_viewed", "refund_requested")
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Stream:
    """Envelopes in send order; a duplicate is an earlier envelope's id sent again, for the same user."""

    sent: tuple[Envelope, ...]

    @property
    def unique(self) -> list[Envelope]:
        """Each id once, at its first send."""
        seen: set[str] = set()
        firsts = []
        for envelope in self.sent:
            if envelope.id not in seen:
                seen.add(envelope.id)
                firsts.append(envelope)
        return firsts

    @property
    def ids(self) -> set[str]:
        return {envelope.id for envelope in self.sent}

    def chunks(self, rng: Random, count: int) -> list[tuple[Envelope, ...]]:
        """Cut the send order into `count` non-empty consecutive chunks of random sizes."""
        cuts = sorted(rng.sample(range(1, len(self.sent)), count - 1))
        bounds = [0, *cuts, len(self.sent)]
        return [self.sent[a:b] for a, b in itertools.pairwise(bounds)]


def generate(
    rng: Random,
    *,
    events: int = 3000,
    users: int = 300,
    duplicate_share: float = 0.1,
    tenant: str = "acme",
    topic: str = "orders",
) -> Stream:
    """`events` envelopes in all, `duplicate_share` of them re-sends of an earlier id, users interleaved at random."""
    run = f"{rng.getrandbits(32):08x}"
    user_ids = [f"u{run}-{n:04d}" for n in range(users)]
    duplicates = round(events * duplicate_share)
    uniques = events - duplicates
    firsts: list[Envelope] = []
    for n in range(uniques):
        moment = EPOCH + timedelta(seconds=n)
        user = rng.choice(user_ids)
        firsts.append(
            Envelope(
                id=f"ord-{run}-{n:05d}",
                tenant=tenant,
                topic=topic,
                type=rng.choice(TYPES),
                user_id=user,
                occurred_at=moment,
                received_at=moment,
                dialect="pubsub",
                data={"user_id": user, "sku": f"sku-{rng.randrange(100)}", "n": n},
                metadata={"source": "crash-test"},
            )
        )
    # Sort keys: the n-th unique event at n; a re-send of event n anywhere after it, often much later.
    placed: list[tuple[float, Envelope]] = [(float(n), envelope) for n, envelope in enumerate(firsts)]
    for _ in range(duplicates):
        n = rng.randrange(uniques)
        when = rng.uniform(n + 0.01, uniques)
        again = dataclasses.replace(firsts[n], received_at=EPOCH + timedelta(seconds=when))
        placed.append((when, again))
    placed.sort(key=lambda item: item[0])
    return Stream(tuple(envelope for _, envelope in placed))


def expected_effects(stream: Stream, rules: Sequence[Rule]) -> dict[str, dict[str, Any]]:
    """Per unique id, the rules' part of its effect (rules_fired, changes, totals, ...), folding per user."""
    states: dict[str, UserState] = defaultdict(UserState)
    expected: dict[str, dict[str, Any]] = {}
    for envelope in stream.unique:
        fact = Fact(type=envelope.type, occurred_at=envelope.occurred_at, data=envelope.data)
        states[envelope.user_id], effect = apply(states[envelope.user_id], fact, rules)
        expected[envelope.id] = effect.to_dict()
    return expected


def expected_totals(stream: Stream, rules: Sequence[Rule]) -> dict[str, dict[str, Any]]:
    """Per user, the totals after the user's last unique event."""
    effects = expected_effects(stream, rules)
    return {envelope.user_id: effects[envelope.id]["totals"] for envelope in stream.unique}


def last_unique_ids(stream: Stream) -> dict[str, str]:
    """Per user, the id of the user's last unique event in send order."""
    return {envelope.user_id: envelope.id for envelope in stream.unique}


def check(stream: Stream, effects: Iterable[Mapping[str, Any]], rules: Sequence[Rule]) -> list[str]:
    """Every way the effects break crash-correctness, as readable lines; empty when all is well.

    (a) every unique id has an effect, and all effects of one id are identical;
    (b) each user's final totals (effect of the user's last unique event) are the rules' fold;
    (c) no effect for an id that was never sent;
    (d) each effect's rules part is what the rules give for that event at its place in its user's order.
    """
    problems: list[str] = []
    by_id: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for effect in effects:
        by_id[effect["event_id"]].append(effect)
    sent = stream.ids
    for event_id in sorted(set(by_id) - sent):
        problems.append(f"(c) effect for an id never sent: {event_id}: {by_id[event_id][0]}")
    missing = sorted(sent - set(by_id))
    if missing:
        problems.append(f"(a) {len(missing)} ids without an effect, e.g. {missing[:10]}")
    for event_id in sorted(sent & set(by_id)):
        first, *others = by_id[event_id]
        for other in others:
            if other != first:
                problems.append(f"(a) differing effects for {event_id}: {first} != {other}")
                break
    wanted = expected_effects(stream, rules)
    for user, event_id in sorted(last_unique_ids(stream).items()):
        if by_id.get(event_id) and by_id[event_id][0]["totals"] != wanted[event_id]["totals"]:
            problems.append(
                f"(b) totals of {user} after {event_id}: {by_id[event_id][0]['totals']}, "
                f"rules give {wanted[event_id]['totals']}"
            )
    wrong = [
        (event_id, {k: records[0].get(k) for k in wanted[event_id]}, wanted[event_id])
        for event_id, records in sorted(by_id.items())
        if event_id in wanted and any(records[0].get(k) != v for k, v in wanted[event_id].items())
    ]
    if wrong:
        problems.append(f"(d) {len(wrong)} effects differ from the rules' fold, e.g. {wrong[:3]}")
    return problems


def replay_counts(effects: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """Per id with more than one effect, how many (identical copies are allowed after a crash)."""
    counts: dict[str, int] = defaultdict(int)
    for effect in effects:
        counts[effect["event_id"]] += 1
    return {event_id: n for event_id, n in counts.items() if n > 1}


class Sender:
    """A plain aiokafka producer (acks=all, idempotent) that sends envelopes as Avro, keyed by tenant:user."""

    def __init__(self, bootstrap: str, topic: str, schema: Schema) -> None:
        self._topic = topic
        self._schema = schema
        self._producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)

    async def __aenter__(self) -> Sender:
        await self._producer.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._producer.stop()

    async def send(self, envelopes: Iterable[Envelope]) -> None:
        """Return once Kafka has acknowledged every one; one user's envelopes stay in order."""
        acks = [
            await self._producer.send(self._topic, key=envelope.key, value=envelope.encode(self._schema))
            for envelope in envelopes
        ]
        await asyncio.gather(*acks)


class EffectWatcher:
    """Reads a topic of effects from the beginning in the background, to wait on progress while workers run."""

    def __init__(self, bootstrap: str, topic: str, schemas: SchemaSet) -> None:
        self._schemas = schemas
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
        )
        self._task: asyncio.Task[None] | None = None
        self.records: list[dict[str, Any]] = []
        self.ids: set[str] = set()

    async def __aenter__(self) -> EffectWatcher:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                for message in messages:
                    record = self._schemas.decode(message.value)[1]
                    self.records.append(record)
                    self.ids.add(record["event_id"])

    async def wait(self, done: Callable[[], bool], *, timeout: float, describe: str) -> float:
        """Wait until `done()` holds; return the seconds it took, or fail at the deadline."""
        start = time.monotonic()
        while not done():
            if self._task is not None and self._task.done():
                self._task.result()  # the reader died: raise its error
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"{describe}: not within {timeout}s ({len(self.ids)} ids seen)")
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    async def wait_for_ids(self, count: int, *, timeout: float, describe: str) -> float:
        """Wait until effects of at least `count` distinct ids are out."""
        return await self.wait(lambda: len(self.ids) >= count, timeout=timeout, describe=describe)


async def group_members(bootstrap: str, group_id: str) -> tuple[str, int]:
    """(state, member count) of a consumer group, as the group coordinator sees it; ("", 0) while it has none."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_consumer_groups([group_id])
        (group,) = response.to_object()["groups"]
        return group["state"], len(group["members"])
    except KafkaError:  # no coordinator yet: a fresh broker creates __consumer_offsets on first use
        return "", 0
    finally:
        await admin.close()
