"""The compared job, pure: its event mix, its rules as a Sluice topic file, and the check of either side's effects.

The job: drop an event id seen before; lesson_completed earns 10 coins and counts the user's lessons, with a
badge at the fifth; quiz_passed with a score of at least 0.9 earns 25 coins; every other event changes
nothing. Each unique event gets exactly one effect, carrying the user's totals after it.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

SLUG = "learning"
LESSON = "lesson_completed"
QUIZ = "quiz_passed"
LESSON_COINS = 10
QUIZ_COINS = 25
QUIZ_MIN_SCORE = 0.9
COUNTER = "lessons_completed"
BADGE = "five_lessons"
BADGE_AT = 5
# 55% lessons, 35% quizzes (scores 0.5 to 1.0, so about a fifth reach 0.9), 10% an event no rule matches.
TYPES = (LESSON,) * 11 + (QUIZ,) * 7 + ("lesson_started",) * 2
RECENT = 2000  # a repeated id copies one of the last this many events, as a client's retry would

# The job as Sluice runs it: topics/learning.yaml in the bench's own topics folder.
TOPIC_FILE = f"""\
description: Learning events, the job of the comparison benchmark.
kafka_topic: events.{SLUG}
rules:
  - id: lesson-coins
    when: {{type: {LESSON}}}
    then:
      - add_coins: {LESSON_COINS}
      - increment: {COUNTER}
      - award_badge: {{badge: {BADGE}, counter: {COUNTER}, at_least: {BADGE_AT}}}
  - id: good-quiz
    when:
      all:
        - {{type: {QUIZ}}}
        - {{field: data.score, gte: {QUIZ_MIN_SCORE}}}
    then:
      - add_coins: {QUIZ_COINS}
"""


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    user_id: str
    type: str
    occurred_ms: int
    score: float | None = None  # quiz_passed only

    @property
    def data(self) -> dict[str, Any]:
        return {} if self.score is None else {"score": self.score}

    def json(self) -> bytes:
        """The event as the Quix Streams application reads it."""
        value = {"id": self.id, "type": self.type, "user_id": self.user_id, "occurred_at": self.occurred_ms}
        return orjson.dumps({**value, "data": self.data})


def event_mix(count: int, users: int, repeated_share: float, seed: int, now_ms: int) -> list[Event]:
    """`count` events of `users` users, in order; round(count * repeated_share) of them repeat a recent event
    (its id, user and all), the rest have ids of their own. The same arguments give the same events."""
    rng = random.Random(seed)
    repeats = set(rng.sample(range(1, count), min(round(count * repeated_share), max(0, count - 1))))
    events: list[Event] = []
    for n in range(count):
        if n in repeats:
            events.append(events[rng.randrange(max(0, n - RECENT), n)])
            continue
        kind = rng.choice(TYPES)
        score = round(rng.uniform(0.5, 1.0), 2) if kind == QUIZ else None
        user = f"user_{rng.randrange(users)}"
        events.append(Event(f"evt_{seed}_{n}", user, kind, now_ms - rng.randrange(5000), score))
    return events


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the job must leave: one effect for each of these ids, and each user's coins and badge."""

    ids: frozenset[str]
    coins: Mapping[str, int]  # every user with an event -> coins after the last
    badged: frozenset[str]  # the users holding the badge


def expected(events: Iterable[Event]) -> Outcome:
    """The job worked out from the events alone, apart from either side's code."""
    ids: set[str] = set()
    coins: dict[str, int] = {}
    lessons: Counter[str] = Counter()
    for event in events:
        if event.id in ids:
            continue
        ids.add(event.id)
        coins.setdefault(event.user_id, 0)
        if event.type == LESSON:
            coins[event.user_id] += LESSON_COINS
            lessons[event.user_id] += 1
        elif event.type == QUIZ and event.score is not None and event.score >= QUIZ_MIN_SCORE:
            coins[event.user_id] += QUIZ_COINS
    badged = frozenset(user for user, count in lessons.items() if count >= BADGE_AT)
    return Outcome(frozenset(ids), coins, badged)


@dataclass(frozen=True, slots=True)
class Observed:
    """One effect record of either side: its event, its user, and the user's totals after it."""

    event_id: str
    user_id: str
    coins: int
    badges: tuple[str, ...]


def sluice_observed(effect: Mapping[str, Any]) -> Observed:
    """A decoded Sluice effect (schemas/effect.avsc)."""
    totals = effect["totals"]
    return Observed(effect["event_id"], effect["user_id"], totals["coins"], tuple(totals["badges"]))


def quix_observed(value: bytes) -> Observed:
    """An effect of the Quix Streams application (bench/compare/quix_app.py), JSON."""
    effect = orjson.loads(value)
    totals = effect["totals"]
    return Observed(effect["event_id"], effect["user_id"], totals["coins"], tuple(totals["badges"]))


def check(outcome: Outcome, effects: Iterable[Observed]) -> list[str]:
    """What is wrong with a side's effects, read in each partition's order (one user's share a partition);
    empty if they are right: one effect per unique event, and each user's last totals as expected."""
    counts: Counter[str] = Counter()
    last: dict[str, Observed] = {}
    for effect in effects:
        counts[effect.event_id] += 1
        last[effect.user_id] = effect
    problems = []
    missing = sorted(outcome.ids - counts.keys())
    if missing:
        problems.append(f"{len(missing):,} events without an effect, e.g. {missing[0]}")
    repeated = sorted(event_id for event_id, count in counts.items() if count > 1)
    if repeated:
        problems.append(f"{len(repeated):,} events with more than one effect, e.g. {repeated[0]}")
    unknown = sorted(counts.keys() - outcome.ids)
    if unknown:
        problems.append(f"{len(unknown):,} effects of events never sent, e.g. {unknown[0]}")
    wrong = sorted(user for user, coins in outcome.coins.items() if user in last and last[user].coins != coins)
    if wrong:
        user = wrong[0]
        coins = f"{last[user].coins}, not {outcome.coins[user]}"
        problems.append(f"{len(wrong):,} users with wrong coins, e.g. {user}: {coins}")
    badges = sorted(
        user
        for user in outcome.coins
        if user in last and last[user].badges.count(BADGE) != (1 if user in outcome.badged else 0)
    )
    if badges:
        user = badges[0]
        want = "once" if user in outcome.badged else "not"
        problems.append(f"{len(badges):,} users with a wrong badge, e.g. {user}: {last[user].badges}, {BADGE} {want}")
    return problems
