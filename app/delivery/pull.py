"""Pull subscriptions, pure: each event's lock or ack, the arbiter of racing claims, and which event goes next."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

LOCK, ACK, NACK = "lock", "ack", "nack"
OPS = (LOCK, ACK, NACK)


class State(enum.Enum):
    """Where one event of one subscription stands at a given moment."""

    AVAILABLE = "available"  # never handed out, nacked, or its lock has ended
    LOCKED = "locked"  # handed out, and the lock has not ended yet
    ACKED = "acked"  # done for good


class Outcome(enum.Enum):
    """What one record of the pulls topic did when folded in."""

    APPLIED = "applied"
    LOST = "lost"  # a lock that came while an earlier lock was still running: the earlier one holds
    ACKED = "acked"  # the event was acked before: nothing changes


@dataclass(frozen=True, slots=True)
class Change:
    """One record of the pulls topic: a lock (with its length), an ack or a nack of one event.

    `token` is unique per write, so the process that wrote a record knows it when it reads it back.
    """

    op: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    lock_ms: int = 0

    def encode(self) -> bytes:
        body: dict[str, Any] = {"op": self.op, "token": self.token}
        if self.op == LOCK:
            body["lock_ms"] = self.lock_ms
        return orjson.dumps(body)

    @classmethod
    def decode(cls, value: bytes) -> Change:
        """The change a record holds; ValueError for anything else."""
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(body, dict) or body.get("op") not in OPS or not isinstance(body.get("token"), str):
            raise ValueError("not a pull change: expected op (lock, ack or nack) and token")
        lock_ms = body.get("lock_ms", 0)
        if body["op"] == LOCK and (not isinstance(lock_ms, int) or lock_ms <= 0):
            raise ValueError("a lock needs a positive lock_ms")
        return cls(body["op"], body["token"], lock_ms if body["op"] == LOCK else 0)


def pull_key(tenant: str, subscription: str, event_id: str) -> str:
    """The record key of one event of one subscription; neither a tenant nor a subscription name holds ':'."""
    return f"{tenant}:{subscription}:{event_id}"


def split_key(key: str) -> tuple[str, str, str]:
    """(tenant, subscription, event id) of a record key; an event id may hold ':' itself."""
    tenant, _, rest = key.partition(":")
    subscription, _, event_id = rest.partition(":")
    return tenant, subscription, event_id


@dataclass(slots=True)
class Entry:
    acked: bool = False
    holder: str | None = None  # the token of the lock that holds it
    until_ms: int = 0  # when that lock ends


class Ledger:
    """The pulls topic folded in log order: the same records give every process the same answers.

    A lock takes effect unless the event is acked, or the lock before it is still running at
    the new record's timestamp: the first unexpired lock in log order wins, so two claims of
    one event never both succeed. Timestamps are the broker's (the topic is created with
    LogAppendTime), one clock for every writer. An ack is final; a nack ends the lock.
    """

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def apply(self, key: str, change: Change | None, at_ms: int) -> Outcome:
        """Fold one record in (None: a tombstone, which forgets the event); what it did."""
        if change is None:
            self._entries.pop(key, None)
            return Outcome.APPLIED
        entry = self._entries.setdefault(key, Entry())
        if entry.acked:
            return Outcome.ACKED
        if change.op == ACK:
            entry.acked, entry.holder, entry.until_ms = True, None, 0
        elif change.op == NACK:
            entry.holder, entry.until_ms = None, 0
        elif entry.holder is not None and at_ms < entry.until_ms:
            return Outcome.LOST
        else:
            entry.holder, entry.until_ms = change.token, at_ms + change.lock_ms
        return Outcome.APPLIED

    def state(self, key: str, now_ms: int) -> State:
        entry = self._entries.get(key)
        if entry is None:
            return State.AVAILABLE
        if entry.acked:
            return State.ACKED
        return State.LOCKED if entry.holder is not None and now_ms < entry.until_ms else State.AVAILABLE

    def known(self, key: str) -> bool:
        """Whether any record was written for this event of this subscription."""
        return key in self._entries


@dataclass(frozen=True, slots=True)
class Pending:
    """An event of a subscription's stream, as a pull subscription hands it out."""

    id: str
    user_id: str
    published_ms: int  # when it reached its topic: its send_at if scheduled, else when Sluice received it
    partition: int
    offset: int
    record: Mapping[str, Any] = field(repr=False, compare=False)  # the decoded envelope

    @property
    def order(self) -> tuple[int, int, int]:
        return (self.published_ms, self.partition, self.offset)


class Scan:
    """One pass over a subscription's events, each partition in offset order, against the ledger at `now_ms`.

    - `available`: for each user, the first event not acked, if it is not locked. A user's
      later events wait while an earlier one is unacked, so a user's events are handed out
      in the order they were published, as long as each is acked within its lock.
    - `unacked(...)`: every event not acked (locked or not), published at or after `cutoff_ms`.
    - `settled`: per partition, the offset after the leading records that need nothing more
      (not this subscription's, acked, or undecodable): a later pass may start there.

    A record is fed with `add(partition, offset, event)`; `event` is None for a record that is
    not the subscription's. An id seen again (a client's retry) is the same event.
    """

    def __init__(self, ledger: Ledger, tenant: str, subscription: str, now_ms: int, *, cutoff_ms: int = 0) -> None:
        self._ledger = ledger
        self._prefix = pull_key(tenant, subscription, "")
        self._now_ms = now_ms
        self._cutoff_ms = cutoff_ms
        self._ids: set[str] = set()
        self._users: set[str] = set()
        self._open: set[int] = set()  # partitions where an unsettled event was met
        self.settled: dict[int, int] = {}
        self._available: dict[int, list[Pending]] = {}
        self._unacked: dict[int, list[Pending]] = {}

    def key(self, event_id: str) -> str:
        return self._prefix + event_id

    def add(self, partition: int, offset: int, event: Pending | None) -> None:
        done = event is None or self._settle(event)
        if partition in self._open:
            return
        if done:
            self.settled[partition] = offset + 1
        else:
            self._open.add(partition)

    def _settle(self, event: Pending) -> bool:
        """Classify one event; whether it needs nothing more (acked)."""
        state = self._ledger.state(self.key(event.id), self._now_ms)
        if state is State.ACKED:
            return True
        if event.id in self._ids:
            return False  # the same event again: it is listed, or waits, once
        self._ids.add(event.id)
        if event.published_ms >= self._cutoff_ms:
            self._unacked.setdefault(event.partition, []).append(event)
        if event.user_id not in self._users:
            self._users.add(event.user_id)
            if state is State.AVAILABLE:
                self._available.setdefault(event.partition, []).append(event)
        return False

    def seen(self, event_id: str) -> bool:
        """Whether an event of that id, not acked, was met."""
        return event_id in self._ids

    def available_in(self, partition: int) -> int:
        return len(self._available.get(partition, ()))

    def unacked_in(self, partition: int) -> int:
        return len(self._unacked.get(partition, ()))

    @property
    def available(self) -> list[Pending]:
        """The events that may be handed out now, earliest first."""
        return _ordered(self._available.values())

    def unacked(self) -> list[Pending]:
        """The events not acked, earliest first."""
        return _ordered(self._unacked.values())


def _ordered(groups: Iterable[list[Pending]]) -> list[Pending]:
    return sorted((event for group in groups for event in group), key=lambda event: event.order)
