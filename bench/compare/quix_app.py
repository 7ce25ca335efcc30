"""The compared job as a Quix Streams application: dedupe by event id, per-user rules, one effect per event.

Run by `python -m bench compare` with the Python of its own virtualenv (var/bench/quix-venv), as a script:
it imports nothing of Sluice. Written as Quix Streams' documentation has a stateful application: an
Application with the at-least-once guarantee, a StreamingDataFrame over the input topic, a stateful filter
and a stateful apply over the RocksDB State kept per message key (the user), and the result to a topic.
"""

from __future__ import annotations

import argparse
from typing import Any, Protocol

# The job's constants, as bench/compare/job.py has them (this script runs without Sluice installed).
LESSON, QUIZ = "lesson_completed", "quiz_passed"
LESSON_COINS, QUIZ_COINS, QUIZ_MIN_SCORE = 10, 25, 0.9
COUNTER, BADGE, BADGE_AT = "lessons_completed", "five_lessons", 5


class State(Protocol):
    """What the functions use of quixstreams.State: the current message key's own store."""

    def get(self, key: str, default: Any = None) -> Any: ...

    def set(self, key: str, value: Any) -> None: ...

    def exists(self, key: str) -> bool: ...


def first_time(event: dict[str, Any], state: State) -> bool:
    """Keep an event whose id this user has not had before; remember the id. A retry shares the user,
    so its key's state holds the id: one state key per id, not a growing set in one value."""
    seen = "seen:" + event["id"]
    if state.exists(seen):
        return False
    state.set(seen, 1)
    return True


def apply_rules(event: dict[str, Any], state: State) -> dict[str, Any]:
    """The user's rules on one event: the effect, with what changed and the user's totals after it."""
    user = state.get("user") or {"coins": 0, "counters": {}, "badges": []}
    fired: list[str] = []
    coins = 0
    counters: dict[str, int] = {}
    awarded: list[str] = []
    if event["type"] == LESSON:
        fired.append("lesson-coins")
        coins += LESSON_COINS
        lessons = user["counters"].get(COUNTER, 0) + 1
        user["counters"][COUNTER] = lessons
        counters[COUNTER] = 1
        if lessons >= BADGE_AT and BADGE not in user["badges"]:
            user["badges"].append(BADGE)
            awarded.append(BADGE)
    elif event["type"] == QUIZ and event["data"].get("score", 0) >= QUIZ_MIN_SCORE:
        fired.append("good-quiz")
        coins += QUIZ_COINS
    if fired:
        user["coins"] += coins
        state.set("user", user)
    return {
        "event_id": event["id"],
        "user_id": event["user_id"],
        "event_type": event["type"],
        "occurred_at": event["occurred_at"],
        "rules_fired": fired,
        "changes": {"coins": coins, "counters": counters, "badges_awarded": awarded},
        "totals": user,
        "debug_reason": None if fired else "no_matching_rules",
    }


def main() -> None:
    from quixstreams import Application  # type: ignore[import-not-found]

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--broker", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args()
    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    events = app.topic(args.input, value_deserializer="json")
    effects = app.topic(args.output, value_serializer="json")
    sdf = app.dataframe(events)
    sdf = sdf.filter(first_time, stateful=True)
    sdf = sdf.apply(apply_rules, stateful=True)
    sdf.to_topic(effects)
    app.run()  # until SIGTERM


if __name__ == "__main__":
    main()
