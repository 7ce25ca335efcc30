"""What has been applied for each user: dedupe and apply one event so that a crash never counts twice.

Pure: the worker keeps these values in one RocksDB-backed table and does the I/O.

The table holds two kinds of values, both written to the changelog partition of
the event being processed:

- a user record (`UserRecord`): the rules state, how many events it has had
  applied (`seq`), and per source Kafka topic the highest offset applied;
- an entry per event id (`Entry`): where the event was first applied (topic,
  offset), when, the effect it produced and the user record right after it.

The worker takes events in batches. Per event it writes the entry, then sends
the effect; at the end of the batch it writes each user record it touched, once.
So in the changelog every entry comes before the user record that includes it.
Faust's writes to the changelog are not atomic with the offset commit
(they go out as separate messages), so after a crash the same records can come
again with any prefix of those writes done. Because an entry holds the outcome
(the effect and the user record right after it), a redelivered record finds it
and replays the very same outcome: the same state, the same effect, never a
second application.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

import orjson

from app.core.envelope import Envelope
from app.core.instants import epoch_ms
from app.rules import Effect, Rule, UserState, apply_to_record


class Outcome(Enum):
    APPLIED = "applied"  # first time: rules ran
    REDELIVERED = "redelivered"  # the same Kafka record again after a crash: replay its outcome
    DUPLICATE = "duplicate"  # the same event id sent again: nothing changes


@dataclass(frozen=True, slots=True)
class UserRecord:
    state: UserState = field(default_factory=UserState)
    # Applications so far. An entry keeps the record right after its event, so a
    # record includes that event exactly when its seq has reached the entry's.
    seq: int = 0
    offsets: Mapping[str, int] = field(default_factory=dict)

    def includes(self, entry: Entry) -> bool:
        return self.seq >= entry.user_after.seq

    def applied(self, topic: str, offset: int) -> bool:
        return self.offsets.get(topic, -1) >= offset

    def after(self, state: UserState, topic: str, offset: int) -> UserRecord:
        offsets = {**self.offsets, topic: max(offset, self.offsets.get(topic, -1))}
        return UserRecord(state, self.seq + 1, offsets)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> UserRecord:
        return cls(UserState.from_dict(raw["state"]), raw["seq"], dict(raw["offsets"]))


@dataclass(frozen=True, slots=True)
class Entry:
    applied_at_ms: int  # first, so the sweep reads it off the front of the JSON (`applied_at`)
    topic: str
    offset: int
    effect: Mapping[str, Any]  # the Avro Effect record, timestamps in epoch ms
    user_after: UserRecord

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Entry:
        return cls(
            topic=raw["topic"],
            offset=raw["offset"],
            applied_at_ms=raw["applied_at_ms"],
            effect=raw["effect"],
            user_after=UserRecord.from_dict(raw["user_after"]),
        )


@dataclass(frozen=True, slots=True)
class Step:
    """What one event came to: its outcome, and what to send for it."""

    outcome: Outcome
    effect: Mapping[str, Any] | None = None  # for the effects topic
    # For the replies topic: the first delivery's effect, when the same id is sent again.
    reply: Mapping[str, Any] | None = None


# Every entry key starts so (see `keys`), so entries sit together in RocksDB's key order.
ENTRY_PREFIX = b'["e",'


def keys(event: Envelope) -> tuple[bytes, bytes]:
    """Table keys of the event's dedupe entry and of its user's record."""
    return (
        orjson.dumps(["e", event.tenant, event.topic, event.id]),
        orjson.dumps(["u", event.tenant, event.user_id]),
    )


def expired(entries: Iterable[tuple[bytes, bytes]], *, now: datetime, dedupe_window_s: int) -> list[bytes]:
    """Keys of the entries past the dedupe window: they count as absent already, so deleting changes nothing."""
    oldest_ms = epoch_ms(now) - dedupe_window_s * 1000
    return [key for key, raw in entries if applied_at(raw) < oldest_ms]


_APPLIED_AT = b'{"applied_at_ms":'


def applied_at(raw: bytes) -> int:
    """When an entry (its table value) was applied, in epoch ms.

    The sweep reads two entries per event applied; parsing each whole (effect, user record) cost
    more than the rest of the sweep, so the number is read off the front where `dump` puts it.
    """
    if raw.startswith(_APPLIED_AT):
        end = raw.find(b",", len(_APPLIED_AT))
        if end > 0:
            return int(raw[len(_APPLIED_AT) : end])
    return int(orjson.loads(raw)["applied_at_ms"])


class Batch:
    """A run of events from one source partition, deduped and applied in order.

    `read` gets a table value; what this batch wrote before is read from the batch.
    `known` holds user records as the table has them now, parsed, by key: a hit is not read.
    Entries are written as the events come (`entries`), user records once at the
    end (`users`): the worker writes all of `entries` before any of `users`.
    """

    def __init__(
        self,
        read: Callable[[bytes], bytes | None],
        *,
        now: datetime,
        dedupe_window_s: int,
        known: Mapping[bytes, UserRecord] | None = None,
    ) -> None:
        self._read = read
        self._known = known or {}
        self._now_ms = epoch_ms(now)
        self._window_ms = dedupe_window_s * 1000
        self.entries: list[tuple[bytes, bytes]] = []
        self._written: dict[bytes, bytes] = {}
        self._users: dict[bytes, UserRecord] = {}

    def step(
        self, event: Envelope, *, source_topic: str, offset: int, rules: tuple[Rule, ...], rules_version: str
    ) -> Step:
        entry_key, user_key = keys(event)
        entry = self._entry(entry_key)
        user = self._user(user_key)
        if entry is not None:
            if (entry.topic, entry.offset) != (source_topic, offset):
                return Step(Outcome.DUPLICATE, reply={**entry.effect, "replayed": True})
            # Re-assert both writes: either may have been lost with the crash.
            self._write_entry(entry_key, entry)
            self._users[user_key] = user if user.includes(entry) else entry.user_after
            return Step(Outcome.REDELIVERED, effect=entry.effect)
        if user.applied(source_topic, offset) and self._now_ms - epoch_ms(event.received_at) > self._window_ms:
            # Redelivered after its entry expired: applied long ago, nothing to redo. Only then:
            # faust can skip a record during recovery and deliver it again after later ones
            # (seen in the crash test), so a recent record below the mark is still new.
            return Step(Outcome.DUPLICATE)
        # The envelope is the engine's fact as it is, and the effect goes straight to its record.
        state, changes = apply_to_record(user.state, event, rules)
        after = user.after(state, source_topic, offset)
        record = _record(event, changes, rules_version)
        # Written as `dump(Entry(...))` would write it (the same JSON), without building the Entry.
        value = orjson.dumps(
            {
                "applied_at_ms": self._now_ms,
                "topic": source_topic,
                "offset": offset,
                "effect": record,
                "user_after": after,
            }
        )
        self.entries.append((entry_key, value))
        self._written[entry_key] = value
        self._users[user_key] = after
        return Step(Outcome.APPLIED, effect=record)

    @property
    def users(self) -> list[tuple[bytes, bytes]]:
        """The user records this batch touched, each as it stands at the end of the batch."""
        return [(key, dump(user)) for key, user in self._users.items()]

    @property
    def user_records(self) -> Iterable[tuple[bytes, UserRecord]]:
        """The same records, parsed."""
        return self._users.items()

    def _entry(self, key: bytes) -> Entry | None:
        raw = self._written.get(key) or self._read(key)
        if raw is None:
            return None
        entry = Entry.from_dict(orjson.loads(raw))
        # An entry past the window counts as absent; the sweep (app/worker/sweep.py) deletes it later.
        return None if self._now_ms - entry.applied_at_ms > self._window_ms else entry

    def _user(self, key: bytes) -> UserRecord:
        if key in self._users:
            return self._users[key]
        known = self._known.get(key)
        if known is not None:
            return known
        raw = self._read(key)
        return UserRecord() if raw is None else UserRecord.from_dict(orjson.loads(raw))

    def _write_entry(self, key: bytes, entry: Entry) -> None:
        value = dump(entry)
        self.entries.append((key, value))
        self._written[key] = value


def dump(value: Entry | UserRecord) -> bytes:
    """A table value; `from_dict` of its JSON gives the value back."""
    # orjson writes the dataclasses field by field (tuples as arrays) itself, at a fraction of the
    # cost of building dicts first; from_dict reads that layout back. Their mappings are plain dicts.
    return orjson.dumps(value)


def effect_record(event: Envelope, effect: Effect, rules_version: str) -> dict[str, Any]:
    """The Avro Effect record (schemas/effect.avsc) for an event."""
    return _record(event, effect.to_dict(), rules_version)


def _record(event: Envelope, changes: Mapping[str, Any], rules_version: str) -> dict[str, Any]:
    return {
        "event_id": event.id,
        "tenant": event.tenant,
        "topic": event.topic,
        "user_id": event.user_id,
        "event_type": event.type,
        "occurred_at": epoch_ms(event.occurred_at),
        "rules_version": rules_version,
        "replayed": False,
        **changes,
    }
