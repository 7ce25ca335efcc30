"""Rules, conditions, actions, user state and effects as frozen, typed values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson

from app.core.conditions import Condition

COINS = "coins"


@dataclass(frozen=True, slots=True)
class Fact:
    """What the engine sees of an event."""

    type: str
    occurred_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)


class FactLike(Protocol):
    """What the engine reads of an event: a `Fact`, or any value with these fields (the worker's envelope)."""

    @property
    def type(self) -> str: ...

    @property
    def occurred_at(self) -> datetime: ...

    @property
    def data(self) -> Mapping[str, Any]: ...


# Conditions: the language rules share with subscription filters (app/core/conditions.py).


# Actions


@dataclass(frozen=True, slots=True)
class AddPoints:
    amount: int
    currency: str = COINS


@dataclass(frozen=True, slots=True)
class Increment:
    counter: str
    by: int = 1


@dataclass(frozen=True, slots=True)
class SetCounter:
    counter: str
    value: int


@dataclass(frozen=True, slots=True)
class AwardBadge:
    """Award once per user: at once (first time), when a counter reaches `at_least`, or on N events in a window."""

    badge: str
    counter: str | None = None
    at_least: int = 0
    window_events: int = 0
    window_seconds: int = 0


@dataclass(frozen=True, slots=True)
class BadgeReady:
    """Earned but waiting to be claimed."""

    badge: str


@dataclass(frozen=True, slots=True)
class GrantTokens:
    token: str
    amount: int = 1


@dataclass(frozen=True, slots=True)
class UpdateStreak:
    """Consecutive days with the event, by event time in `timezone`; milestones are streak lengths."""

    name: str = "daily"
    timezone: str = "UTC"
    milestones: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class EvolutionReady:
    """Mark evolution_ready when a points currency crosses one of the level thresholds."""

    currency: str
    levels: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Emit:
    """A custom named effect with a payload."""

    name: str
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stop:
    """No later rule sees this event."""


Action = (
    AddPoints
    | Increment
    | SetCounter
    | AwardBadge
    | BadgeReady
    | GrantTokens
    | UpdateStreak
    | EvolutionReady
    | Emit
    | Stop
)


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    actions: tuple[Action, ...]
    when: Condition | None = None  # None matches every event


# State


@dataclass(frozen=True, slots=True)
class Streak:
    current: int = 0
    longest: int = 0
    last_day: int = 0  # proleptic Gregorian ordinal of the last counted day, 0 for never

    def to_dict(self) -> dict[str, int]:
        return {"current": self.current, "longest": self.longest, "last_day": self.last_day}


@dataclass(frozen=True, slots=True)
class UserState:
    points: Mapping[str, int] = field(default_factory=dict)
    counters: Mapping[str, int] = field(default_factory=dict)
    badges: tuple[str, ...] = ()  # in the order earned
    badges_ready: tuple[str, ...] = ()
    tokens: Mapping[str, int] = field(default_factory=dict)
    streaks: Mapping[str, Streak] = field(default_factory=dict)
    levels: Mapping[str, int] = field(default_factory=dict)  # currency -> highest level threshold reached
    # Recent event times (ms) per windowed badge rule, at most N-1 kept.
    windows: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def coins(self) -> int:
        return self.points.get(COINS, 0)

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": dict(self.points),
            "counters": dict(self.counters),
            "badges": list(self.badges),
            "badges_ready": list(self.badges_ready),
            "tokens": dict(self.tokens),
            "streaks": {name: streak.to_dict() for name, streak in self.streaks.items()},
            "levels": dict(self.levels),
            "windows": {key: list(times) for key, times in self.windows.items()},
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> UserState:
        return cls(
            points=dict(raw.get("points", {})),
            counters=dict(raw.get("counters", {})),
            badges=tuple(raw.get("badges", ())),
            badges_ready=tuple(raw.get("badges_ready", ())),
            tokens=dict(raw.get("tokens", {})),
            streaks={name: Streak(**s) for name, s in raw.get("streaks", {}).items()},
            levels=dict(raw.get("levels", {})),
            windows={key: tuple(times) for key, times in raw.get("windows", {}).items()},
        )


@dataclass(frozen=True, slots=True)
class Effect:
    """What one event changed, and the user's totals after it."""

    rules_fired: tuple[str, ...]
    points: Mapping[str, int]  # deltas per currency
    counters: Mapping[str, int]  # deltas
    badges_awarded: tuple[str, ...]
    badges_ready: tuple[str, ...]
    tokens: Mapping[str, int]  # granted now
    evolution_ready: bool
    streak_milestones: tuple[tuple[str, int], ...]  # (streak name, days)
    emitted: tuple[tuple[str, Mapping[str, Any]], ...]  # custom effects (name, payload)
    totals: UserState
    debug_reason: str | None = None

    @property
    def coins(self) -> int:
        return self.points.get(COINS, 0)

    def to_dict(self) -> dict[str, Any]:
        """The `changes`/`totals` part of the Avro Effect record (schemas/effect.avsc).

        Its mappings are this effect's own (never changed), not copies, as the worker builds
        one record an event: read it, do not change it.
        """
        return effect_dict(
            self.rules_fired,
            self.points,
            self.counters,
            self.badges_awarded,
            self.badges_ready,
            self.tokens,
            self.evolution_ready,
            self.streak_milestones,
            self.emitted,
            self.totals,
            self.debug_reason,
        )

    def gamification(self) -> dict[str, Any]:
        """The gamification dialect's answer: {coins, badges_awarded, badges_ready, tokens, ...}."""
        answer: dict[str, Any] = {
            "coins": self.coins,
            "badges_awarded": list(self.badges_awarded),
            "badges_ready": list(self.badges_ready),
            "tokens": [{"token": token, "amount": amount} for token, amount in self.tokens.items()],
            "evolution_ready": self.evolution_ready,
            "streak_milestones": [{"streak": name, "days": days} for name, days in self.streak_milestones],
        }
        if self.debug_reason is not None:
            answer["debug_reason"] = self.debug_reason
        return answer


def effect_dict(
    rules_fired: Sequence[str],
    points: Mapping[str, int],
    counters: Mapping[str, int],
    badges_awarded: Sequence[str],
    badges_ready: Sequence[str],
    tokens: Mapping[str, int],
    evolution_ready: bool,
    streak_milestones: Sequence[tuple[str, int]],
    emitted: Sequence[tuple[str, Mapping[str, Any]]],
    totals: UserState,
    debug_reason: str | None,
) -> dict[str, Any]:
    """`Effect.to_dict` of an effect with these fields, for the engine to write without building the Effect."""
    return {
        "rules_fired": list(rules_fired),
        "changes": {
            "coins": points.get(COINS, 0),
            "points": points,
            "counters": counters,
            "badges_awarded": list(badges_awarded),
            "badges_ready": list(badges_ready),
            "tokens": tokens,
            "evolution_ready": evolution_ready,
            "streak_milestones": [{"streak": name, "days": days} for name, days in streak_milestones],
            # Avro has no "any JSON" type: a payload travels as JSON text, like the envelope's data.
            "custom": [{"name": name, "payload": orjson.dumps(payload).decode()} for name, payload in emitted],
        },
        "totals": {
            "coins": totals.points.get(COINS, 0),
            "points": totals.points,
            "counters": totals.counters,
            "badges": list(totals.badges),
            "badges_ready": list(totals.badges_ready),
            "tokens": totals.tokens,
            "streaks": {name: {"current": s.current, "longest": s.longest} for name, s in totals.streaks.items()},
        },
        "debug_reason": debug_reason,
    }
