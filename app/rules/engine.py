"""Apply a topic's rules, in order, to one user's state: (state, fact, rules) -> (state, effect). Pure."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any
from zoneinfo import ZoneInfo

from app.core.conditions import MISSING, holds, walk
from app.core.instants import epoch_ms
from app.rules.model import (
    COINS,
    AddPoints,
    AwardBadge,
    BadgeReady,
    Effect,
    Emit,
    EvolutionReady,
    FactLike,
    GrantTokens,
    Increment,
    Rule,
    SetCounter,
    Stop,
    Streak,
    UpdateStreak,
    UserState,
    effect_dict,
)

NO_MATCHING_RULES = "no_matching_rules"
NO_CHANGE = "no_state_change"


def apply(state: UserState, fact: FactLike, rules: Sequence[Rule]) -> tuple[UserState, Effect]:
    work = _run(state, fact, rules)
    return work.after, work.effect()


def apply_to_record(state: UserState, fact: FactLike, rules: Sequence[Rule]) -> tuple[UserState, dict[str, Any]]:
    """`apply`, with the effect as its `to_dict()`: the worker writes only that, so the Effect is never built."""
    work = _run(state, fact, rules)
    return work.after, work.record()


def _run(state: UserState, fact: FactLike, rules: Sequence[Rule]) -> _Work:
    work = _Work(state)

    def resolve(path: tuple[str, ...]) -> Any:
        return lookup(path, fact, work.view)

    for rule in rules:
        if rule.when is not None and not holds(rule.when, resolve):
            continue
        work.fired.append(rule.id)
        stopped = False
        for action in rule.actions:
            if isinstance(action, Stop):
                stopped = True
                break
            work.do(rule, action, fact)
        if stopped:
            break
    work.finish()
    return work


# Conditions


def lookup(path: tuple[str, ...], fact: FactLike, state: Callable[[], Mapping[str, Any]]) -> Any:
    """`type`, `data.<a>.<b>...`, or the user's `state.coins|points.<c>|counters.<n>|badges|streaks.<s>|...`."""
    head, rest = path[0], path[1:]
    if head == "type":
        return fact.type if not rest else MISSING
    if head == "data":
        return walk(fact.data, rest)
    if head == "state":
        return walk(state(), rest)
    return MISSING


# Actions


class _Work:
    """The state being changed by one event, and the changes so far.

    Points and counters, which most rules change, are copied once up front. The rest are the
    state's own (immutable) values until a rule changes one, which then gets a new value: in
    the worker's profile, copying every collection twice an event was a third of applying it.
    """

    before: UserState
    points: dict[str, int]
    counters: dict[str, int]
    badges: tuple[str, ...]
    badges_ready: tuple[str, ...]
    tokens: Mapping[str, int]
    streaks: Mapping[str, Streak]
    levels: Mapping[str, int]
    windows: Mapping[str, tuple[int, ...]]
    fired: list[str]
    d_points: dict[str, int]
    d_counters: dict[str, int]
    awarded: list[str]
    ready: list[str]
    granted: dict[str, int]
    evolution_ready: bool
    milestones: list[tuple[str, int]]
    emitted: list[tuple[str, Mapping[str, Any]]]
    after: UserState  # set by `finish`
    reason: str | None  # set by `finish`

    def __init__(self, before: UserState) -> None:
        self.before = before
        self.points = dict(before.points)
        self.counters = dict(before.counters)
        self.badges = before.badges
        self.badges_ready = before.badges_ready
        self.tokens = before.tokens
        self.streaks = before.streaks
        self.levels = before.levels
        self.windows = before.windows
        self.fired, self.awarded, self.ready, self.milestones, self.emitted = [], [], [], [], []
        self.d_points, self.d_counters, self.granted = {}, {}, {}
        self.evolution_ready = False

    def state(self) -> UserState:
        # No copies: this work is done with its values once `finish` returns them.
        return UserState(
            points=self.points,
            counters=self.counters,
            badges=self.badges,
            badges_ready=self.badges_ready,
            tokens=self.tokens,
            streaks=self.streaks,
            levels=self.levels,
            windows=self.windows,
        )

    def view(self) -> dict[str, Any]:
        """The state as conditions read it, as it stands now: the work's own values, not copies
        (conditions only read), so a rule that does not read state costs no copy."""
        return {
            "coins": self.points.get(COINS, 0),
            "points": self.points,
            "counters": self.counters,
            # Tuples, as the rule parser freezes a condition's list (`eq: [gold]`) into.
            "badges": self.badges,
            "badges_ready": self.badges_ready,
            "tokens": self.tokens,
            # A condition on a streak reads its current length.
            "streaks": {name: streak.current for name, streak in self.streaks.items()},
        }

    def do(self, rule: Rule, action: Any, fact: FactLike) -> None:
        match action:
            case AddPoints(amount, currency):
                self.points[currency] = self.points.get(currency, 0) + amount
                self.d_points[currency] = self.d_points.get(currency, 0) + amount
            case Increment(counter, by):
                self.counters[counter] = self.counters.get(counter, 0) + by
                self.d_counters[counter] = self.d_counters.get(counter, 0) + by
            case SetCounter(counter, value):
                change = value - self.counters.get(counter, 0)
                self.counters[counter] = value
                self.d_counters[counter] = self.d_counters.get(counter, 0) + change
            case AwardBadge():
                if self._earned(rule, action, fact):
                    self._award(action.badge)
            case BadgeReady(badge):
                if badge not in self.badges and badge not in self.badges_ready:
                    self.badges_ready = (*self.badges_ready, badge)
                    self.ready.append(badge)
            case GrantTokens(token, amount):
                self.tokens = {**self.tokens, token: self.tokens.get(token, 0) + amount}
                self.granted[token] = self.granted.get(token, 0) + amount
            case UpdateStreak():
                self._streak(action, fact)
            case EvolutionReady(currency, levels):
                self._evolve(currency, levels)
            case Emit(name, payload):
                self.emitted.append((name, payload))
            case _:
                raise AssertionError(action)

    def _award(self, badge: str) -> None:
        if badge in self.badges:
            return
        self.badges = (*self.badges, badge)
        self.awarded.append(badge)
        if badge in self.badges_ready:  # claimed: no longer waiting
            self.badges_ready = tuple(b for b in self.badges_ready if b != badge)

    def _earned(self, rule: Rule, action: AwardBadge, fact: FactLike) -> bool:
        if action.badge in self.badges:
            return False
        if action.counter is not None:
            return self.counters.get(action.counter, 0) >= action.at_least
        if action.window_events:
            key = f"{rule.id}:{action.badge}"
            now = epoch_ms(fact.occurred_at)
            start = now - action.window_seconds * 1000
            recent = sorted(t for t in (*self.windows.get(key, ()), now) if start <= t <= now)
            if len(recent) >= action.window_events:
                self.windows = {k: times for k, times in self.windows.items() if k != key}
                return True
            self.windows = {**self.windows, key: tuple(recent[-(action.window_events - 1) :])}
            return False
        return True

    def _streak(self, action: UpdateStreak, fact: FactLike) -> None:
        day = fact.occurred_at.astimezone(ZoneInfo(action.timezone)).date().toordinal()
        streak = self.streaks.get(action.name, Streak())
        if day <= streak.last_day:  # the same day again, or a late event: the streak stands
            return
        current = streak.current + 1 if day == streak.last_day + 1 else 1
        updated = replace(streak, current=current, longest=max(streak.longest, current), last_day=day)
        self.streaks = {**self.streaks, action.name: updated}
        if current in action.milestones:
            self.milestones.append((action.name, current))

    def _evolve(self, currency: str, levels: tuple[int, ...]) -> None:
        total = self.points.get(currency, 0)
        reached = max((level for level in levels if total >= level), default=0)
        if reached > self.levels.get(currency, 0):
            self.levels = {**self.levels, currency: reached}
            self.evolution_ready = True

    def finish(self) -> None:
        """Settle the outcome: the state after the event, the non-zero deltas, and why nothing changed."""
        self.after = after = self.state()
        # A zero delta (add_coins: 0, or +1 then -1) changed nothing. Filtered only when one is
        # there: most events have none, and the check costs less than the copy.
        if 0 in self.d_points.values():
            self.d_points = {k: v for k, v in self.d_points.items() if v}
        if 0 in self.d_counters.values():
            self.d_counters = {k: v for k, v in self.d_counters.items() if v}
        if 0 in self.granted.values():
            self.granted = {k: v for k, v in self.granted.items() if v}
        changed = (
            self.d_points
            or self.d_counters
            or self.awarded
            or self.ready
            or self.granted
            or self.evolution_ready
            or self.milestones
            or self.emitted
            or after.streaks != self.before.streaks
        )
        self.reason = None if changed else (NO_MATCHING_RULES if not self.fired else NO_CHANGE)

    def effect(self) -> Effect:
        return Effect(
            rules_fired=tuple(self.fired),
            points=self.d_points,
            counters=self.d_counters,
            badges_awarded=tuple(self.awarded),
            badges_ready=tuple(self.ready),
            tokens=self.granted,
            evolution_ready=self.evolution_ready,
            streak_milestones=tuple(self.milestones),
            emitted=tuple(self.emitted),
            totals=self.after,
            debug_reason=self.reason,
        )

    def record(self) -> dict[str, Any]:
        """`effect().to_dict()`, without the Effect."""
        return effect_dict(
            self.fired,
            self.d_points,
            self.d_counters,
            self.awarded,
            self.ready,
            self.granted,
            self.evolution_ready,
            self.milestones,
            self.emitted,
            self.after,
            self.reason,
        )
