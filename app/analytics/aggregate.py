"""Aggregation state of one window of one group key: updated per event, merged across partitions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Aggregate:
    """Count, sum, min and max of the values seen, and the distinct users for `distinct_users`.

    Distinct users are exact: a set per window and key, so its size is bounded by the
    users of that window. Sources are keyed by user, so one user's events share a
    partition and the partitions' sets are disjoint: merging partials adds their sizes.
    """

    count: int = 0
    total: float = 0
    low: float | None = None
    high: float | None = None
    users: set[str] | None = None
    distinct: int = 0  # merged partials carry the size only

    def add(self, value: float | None, user: str | None) -> None:
        self.count += 1
        if value is not None:
            self.total += value
            self.low = value if self.low is None else min(self.low, value)
            self.high = value if self.high is None else max(self.high, value)
        if user is not None:
            if self.users is None:
                self.users = set()
            self.users.add(user)

    def merge(self, other: Aggregate) -> None:
        self.count += other.count
        self.total += other.total
        if other.low is not None:
            self.low = other.low if self.low is None else min(self.low, other.low)
        if other.high is not None:
            self.high = other.high if self.high is None else max(self.high, other.high)
        self.distinct = self.distinct_users + other.distinct_users
        self.users = None

    @property
    def distinct_users(self) -> int:
        return len(self.users) if self.users is not None else self.distinct

    def value(self, aggregation: str) -> float | int | None:
        if aggregation == "count":
            return self.count
        if aggregation == "distinct_users":
            return self.distinct_users
        if aggregation == "sum":
            return self.total
        if aggregation == "min":
            return self.low
        if aggregation == "max":
            return self.high
        if aggregation == "mean":
            return self.total / self.count if self.count else None
        raise ValueError(aggregation)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"n": self.count, "s": self.total, "lo": self.low, "hi": self.high}
        if self.users is not None:
            body["u"] = list(self.users)  # unsorted: sorting thousands of users per batch showed in profiles
        elif self.distinct:
            body["d"] = self.distinct
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Aggregate:
        users = body.get("u")
        return cls(
            count=body["n"],
            total=body["s"],
            low=body["lo"],
            high=body["hi"],
            users=None if users is None else set(users),
            distinct=body.get("d", 0),
        )

    def partial(self) -> dict[str, Any]:
        """What a worker sends for merging: the set's size, not the set."""
        return {"n": self.count, "s": self.total, "lo": self.low, "hi": self.high, "d": self.distinct_users}


def numeric(value: Any) -> float | None:
    """A number to aggregate; booleans and everything else are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value
