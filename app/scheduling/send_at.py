"""Scheduled delivery, pure: where an accepted event goes now, the pending set, and a due-time index."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from app.avro.schemas import Schema
from app.core.envelope import Envelope
from app.core.instants import epoch_ms
from app.scheduling.command import Command, command_key

Record = tuple[str, bytes, bytes]  # (Kafka topic, key, value)

SCHEDULE, CANCEL, DELIVERED = "schedule", "cancel", "delivered"
ARRIVED = "arrived"


@dataclass(frozen=True, slots=True)
class Routes:
    """The Kafka topics an accepted event can go to."""

    events: Mapping[str, str]  # topic slug -> Kafka topic
    scheduled: str
    wait_group_events: str
    event_schema: Schema
    command_schema: Schema


def is_due(send_at: datetime | None, now: datetime) -> bool:
    """A send_at in the past, now, or absent means deliver now."""
    return send_at is None or send_at <= now


def ends(pending_at: datetime | None, command: Command) -> bool:
    """Whether `command` ends the schedule pending for `pending_at`.

    A cancel always does. A delivered marker ends only the schedule it delivered: the same
    id scheduled again since (a new send_at) stays pending.
    """
    return command.op == CANCEL or (command.op == DELIVERED and command.at == pending_at)


def scheduled_key(tenant: str, topic: str, event_id: str) -> bytes:
    return command_key(tenant, topic, event_id)


def records(envelope: Envelope, routes: Routes, now: datetime | None) -> list[Record]:
    """What to write for an accepted event; `now=None` delivers it whatever its send_at (the scheduler's case).

    Not yet due: one schedule command, and nothing else until it is delivered. Due: the
    event on its topic and, with a wait group instance, an `arrived` command keyed by
    the instance, so that one partition sees all of an instance's events.
    """
    if now is not None and not is_due(envelope.send_at, now):
        command = Command(
            SCHEDULE,
            envelope.tenant,
            envelope.id,
            at=envelope.send_at,
            body={"topic": envelope.topic, "user_id": envelope.user_id, "type": envelope.type},
            event=envelope.encode(routes.event_schema),
        )
        key = scheduled_key(envelope.tenant, envelope.topic, envelope.id)
        return [(routes.scheduled, key, command.encode(routes.command_schema))]
    out = [(routes.events[envelope.topic], envelope.key, envelope.encode(routes.event_schema))]
    if envelope.wait_group_instance_id is not None:
        arrived = Command(
            ARRIVED,
            envelope.tenant,
            envelope.wait_group_instance_id,
            at=envelope.received_at,
            body={"topic": envelope.topic, "event_id": envelope.id},
        )
        key = command_key(envelope.tenant, envelope.wait_group_instance_id)
        out.append((routes.wait_group_events, key, arrived.encode(routes.command_schema)))
    return out


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A pending scheduled event, as listed."""

    id: str
    topic: str
    user_id: str
    type: str
    send_at: datetime

    def as_dict(self) -> dict[str, str]:
        return {
            "id": self.id,
            "topic": self.topic,
            "user_id": self.user_id,
            "type": self.type,
            "send_at": self.send_at.isoformat(),
        }


@dataclass
class Pending:
    """The scheduled events not yet delivered or cancelled, folded from the scheduled topic's commands."""

    by_tenant: dict[str, dict[tuple[str, str], Scheduled]] = field(default_factory=dict)

    def apply(self, command: Command) -> None:
        topic = str(command.body.get("topic", ""))
        pending = self.by_tenant.setdefault(command.tenant, {})
        if command.op == SCHEDULE and command.at is not None:
            body = command.body
            pending[(topic, command.id)] = Scheduled(
                command.id, topic, str(body.get("user_id", "")), str(body.get("type", "")), command.at
            )
        elif (found := pending.get((topic, command.id))) is not None and ends(found.send_at, command):
            del pending[(topic, command.id)]

    def of(self, tenant: str, topic: str | None = None) -> list[Scheduled]:
        found = self.by_tenant.get(tenant, {}).values()
        return sorted((s for s in found if topic is None or s.topic == topic), key=lambda s: (s.send_at, s.id))

    def find(self, tenant: str, event_id: str, topic: str | None = None) -> list[Scheduled]:
        return [s for s in self.of(tenant, topic) if s.id == event_id]


class Timetable:
    """Keys by due time (ms), per partition: what a timer must act on, without scanning a table each tick.

    Entries are hints: the caller checks the table before acting, so a stale entry (the
    key was cancelled, or rescheduled) costs a lookup, never a wrong delivery.
    """

    def __init__(self) -> None:
        self._heap: list[tuple[int, int, bytes]] = []

    def __len__(self) -> int:
        return len(self._heap)

    def push(self, due_ms: int, partition: int, key: bytes) -> None:
        heapq.heappush(self._heap, (due_ms, partition, key))

    def pop_due(self, now_ms: int) -> list[tuple[int, bytes]]:
        """(partition, key) of every entry due at `now_ms`, removed, earliest first."""
        due = []
        while self._heap and self._heap[0][0] <= now_ms:
            _, partition, key = heapq.heappop(self._heap)
            due.append((partition, key))
        return due

    def keep(self, partitions: Iterable[int]) -> None:
        """Forget entries of partitions this worker no longer has."""
        kept = set(partitions)
        self._heap = [entry for entry in self._heap if entry[1] in kept]
        heapq.heapify(self._heap)


def due_ms(command: Command) -> int | None:
    return None if command.at is None else epoch_ms(command.at)
