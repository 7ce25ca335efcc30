"""Rules, actions, user state and effects as frozen, typed values."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Fact:
    """What the engine sees of an event."""

    type: str
    occurred_at: datetime
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AddCoins:
    amount: int


@dataclass(frozen=True, slots=True)
class Increment:
    counter: str
    by: int = 1


Action = AddCoins | Increment


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    actions: tuple[Action, ...]
    # Empty means the rule matches every event type.
    event_types: frozenset[str] = frozenset()

    def matches(self, fact: Fact) -> bool:
        return not self.event_types or fact.type in self.event_types


@dataclass(frozen=True, slots=True)
class UserState:
    coins: int = 0
    counters: Mapping[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"coins": self.coins, "counters": dict(self.counters)}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> UserState:
        return cls(coins=int(raw.get("coins", 0)), counters=dict(raw.get("counters", {})))


@dataclass(frozen=True, slots=True)
class Effect:
    rules_fired: tuple[str, ...]
    coins: int
    counters: Mapping[str, int]
    totals: UserState
    debug_reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules_fired": list(self.rules_fired),
            "changes": {"coins": self.coins, "counters": dict(self.counters)},
            "totals": self.totals.to_dict(),
            "debug_reason": self.debug_reason,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Effect:
        changes = raw["changes"]
        return cls(
            rules_fired=tuple(raw["rules_fired"]),
            coins=int(changes["coins"]),
            counters=dict(changes["counters"]),
            totals=UserState.from_dict(raw["totals"]),
            debug_reason=raw.get("debug_reason"),
        )
