"""What has been applied for each user: dedupe and apply one event so that a crash never counts twice.

Pure: the worker keeps these values in one RocksDB-backed table and does the I/O.

The table holds two kinds of values, both written to the changelog partition of
the event being processed:

- a user record (`UserRecord`): the rules state plus, per source Kafka topic,
  the offset of the last event applied to it;
- an entry per event id (`Entry`): where the event was first applied (topic,
  offset), when, the effect it produced and the user record right after it.

Per event the worker writes the entry first, then the user record, then sends
the effect. Faust's writes to the changelog are not atomic with the offset commit
(REFERENCE.md section 3, pitfall 2), so after a crash the same record can come
again with any prefix of those three writes done. Because the entry is written
first and holds the outcome, a redelivered record finds it and replays the very
same outcome: the same state, the same effect, never a second application.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import orjson

from app.envelope import Envelope
from app.rules import Effect, Fact, Rule, UserState, apply


class Outcome(Enum):
    APPLIED = "applied"  # first time: rules ran
    REDELIVERED = "redelivered"  # the same Kafka record again after a crash: replay its outcome
    DUPLICATE = "duplicate"  # the same event id sent again: nothing changes


@dataclass(frozen=True, slots=True)
class UserRecord:
    state: UserState = field(default_factory=UserState)
    offsets: Mapping[str, int] = field(default_factory=dict)

    def applied(self, topic: str, offset: int) -> bool:
        return self.offsets.get(topic, -1) >= offset

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state.to_dict(), "offsets": dict(self.offsets)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> UserRecord:
        return cls(UserState.from_dict(raw["state"]), dict(raw["offsets"]))


@dataclass(frozen=True, slots=True)
class Entry:
    topic: str
    offset: int
    applied_at_ms: int
    effect: Mapping[str, Any]  # the Avro Effect record, timestamps in epoch ms
    user_after: UserRecord

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "offset": self.offset,
            "applied_at_ms": self.applied_at_ms,
            "effect": dict(self.effect),
            "user_after": self.user_after.to_dict(),
        }

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
    """What the worker must do for one event: table writes in this order, then send the effect."""

    outcome: Outcome
    writes: tuple[tuple[bytes, bytes], ...] = ()
    effect: Mapping[str, Any] | None = None  # for the effects topic
    # For the replies topic: the first delivery's effect, when the same id is sent again.
    reply: Mapping[str, Any] | None = None


def keys(event: Envelope) -> tuple[bytes, bytes]:
    """Table keys of the event's dedupe entry and of its user's record."""
    return (
        orjson.dumps(["e", event.tenant, event.topic, event.id]),
        orjson.dumps(["u", event.tenant, event.user_id]),
    )


def step(
    event: Envelope,
    *,
    source_topic: str,
    offset: int,
    entry_raw: bytes | None,
    user_raw: bytes | None,
    rules: tuple[Rule, ...],
    rules_version: str,
    now: datetime,
    dedupe_window_s: int,
) -> Step:
    entry = None if entry_raw is None else Entry.from_dict(orjson.loads(entry_raw))
    user = UserRecord() if user_raw is None else UserRecord.from_dict(orjson.loads(user_raw))
    entry_key, user_key = keys(event)
    now_ms = to_ms(now)
    if entry is not None and now_ms - entry.applied_at_ms > dedupe_window_s * 1000:
        entry = None
    if entry is not None:
        if (entry.topic, entry.offset) != (source_topic, offset):
            return Step(Outcome.DUPLICATE, reply={**entry.effect, "replayed": True})
        # Re-assert both writes: either may have been lost with the crash.
        current = user if user.applied(source_topic, offset) else entry.user_after
        return Step(
            Outcome.REDELIVERED,
            writes=((entry_key, _dump(entry)), (user_key, _dump(current))),
            effect=entry.effect,
        )
    if user.applied(source_topic, offset):
        # Applied, but its entry has expired: far older than any redelivery; nothing to redo.
        return Step(Outcome.DUPLICATE)
    fact = Fact(type=event.type, occurred_at=event.occurred_at, data=event.data)
    state, effect = apply(user.state, fact, rules)
    after = UserRecord(state, {**user.offsets, source_topic: offset})
    record = effect_record(event, effect, rules_version)
    entry = Entry(source_topic, offset, now_ms, record, after)
    return Step(
        Outcome.APPLIED,
        writes=((entry_key, _dump(entry)), (user_key, _dump(after))),
        effect=record,
    )


def _dump(value: Entry | UserRecord) -> bytes:
    return orjson.dumps(value.to_dict())


def effect_record(event: Envelope, effect: Effect, rules_version: str) -> dict[str, Any]:
    """The Avro Effect record (schemas/effect.avsc) for an event."""
    return {
        "event_id": event.id,
        "tenant": event.tenant,
        "topic": event.topic,
        "user_id": event.user_id,
        "event_type": event.type,
        "occurred_at": to_ms(event.occurred_at),
        "rules_version": rules_version,
        "replayed": False,
        **effect.to_dict(),
    }


def to_ms(moment: datetime) -> int:
    return int(moment.astimezone(UTC).timestamp() * 1000)
