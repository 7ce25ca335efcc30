"""The comparison bench's own parts: its event mix, the job worked out from it, both sides' rules, the check."""

from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from app import ledger
from app.avro.schemas import SchemaSet
from app.catalog import Catalog
from app.core.envelope import Envelope
from bench.compare import job, quix_app
from bench.compare.job import BADGE, Event, Observed, Outcome
from bench.compare.runner import Run, load, report

NOW_MS = 1_760_000_000_000


def mix(count: int = 2000, users: int = 60) -> list[Event]:
    return job.event_mix(count, users, 0.05, seed=3, now_ms=NOW_MS)


def test_the_mix_repeats_exactly_its_share_of_recent_events_and_is_the_same_for_a_seed() -> None:
    events = mix()
    ids = Counter(event.id for event in events)
    assert len(events) == 2000
    assert sum(ids.values()) - len(ids) == 100  # 5%
    first: dict[str, Event] = {}
    for position, event in enumerate(events):
        if event.id in first:
            assert event == first[event.id]  # a retry: the same event, user and all
            assert position - events.index(first[event.id]) <= job.RECENT
        first.setdefault(event.id, event)
    assert {event.user_id for event in events} <= {f"user_{n}" for n in range(60)}
    assert Counter(event.type for event in events).keys() == {job.LESSON, job.QUIZ, "lesson_started"}
    assert all((event.score is not None) == (event.type == job.QUIZ) for event in events)
    assert mix() == events
    assert job.event_mix(2000, 60, 0.05, seed=4, now_ms=NOW_MS) != events


def test_the_job_worked_out_by_hand() -> None:
    def event(n: int, kind: str, user: str = "u1", score: float | None = None) -> Event:
        return Event(f"e{n}", user, kind, NOW_MS, score)

    lessons = [event(n, job.LESSON) for n in range(5)]
    events = [
        *lessons[:4],
        lessons[3],  # a retry: no coins, no count
        event(10, job.QUIZ, score=0.9),
        event(11, job.QUIZ, score=0.89),
        lessons[4],  # the fifth lesson: the badge
        event(12, "lesson_started", user="u2"),
        event(13, job.LESSON, user="u3"),
    ]
    assert job.expected(events) == Outcome(
        ids=frozenset({"e0", "e1", "e2", "e3", "e4", "e10", "e11", "e12", "e13"}),
        coins={"u1": 5 * 10 + 25, "u2": 0, "u3": 10},
        badged=frozenset({"u1"}),
    )


def test_sluice_applies_the_topic_file_as_the_job_has_it(tmp_path: Path) -> None:
    (tmp_path / f"{job.SLUG}.yaml").write_text(job.TOPIC_FILE)
    spec = Catalog.load(tmp_path)[job.SLUG]
    schemas = SchemaSet.load(Path("schemas"))
    loaded = load(mix(), schemas)
    store: dict[bytes, bytes] = {}
    batch = ledger.Batch(store.get, now=datetime.now(UTC), dedupe_window_s=3600)
    effects = []
    for offset, (_, value) in enumerate(loaded.sluice):
        event = Envelope.decode(schemas["event"], value)
        step = batch.step(event, source_topic="t", offset=offset, rules=spec.rules, rules_version=spec.rules_version)
        if step.effect is not None:
            effect = schemas["effect"].decode(schemas["effect"].encode(step.effect))
            effects.append(job.sluice_observed(effect))
    assert len(effects) == len(loaded.outcome.ids)
    assert loaded.outcome.badged and any(loaded.outcome.coins.values())  # the mix exercises the rules
    assert job.check(loaded.outcome, effects) == []


class DictState:
    """quixstreams.State over a dict: one per message key, as Quix Streams keeps it."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: Any) -> None:
        self.values[key] = value

    def exists(self, key: str) -> bool:
        return key in self.values


def test_the_quix_streams_application_applies_the_job() -> None:
    loaded = load(mix(), SchemaSet.load(Path("schemas")))
    states: defaultdict[bytes, DictState] = defaultdict(DictState)
    effects = []
    for key, value in loaded.quix:
        event = orjson.loads(value)
        if quix_app.first_time(event, states[key]):
            effects.append(job.quix_observed(orjson.dumps(quix_app.apply_rules(event, states[key]))))
    assert len(effects) == len(loaded.outcome.ids)
    assert job.check(loaded.outcome, effects) == []


def test_the_check_names_what_is_wrong() -> None:
    outcome = Outcome(frozenset({"e1", "e2", "e3"}), {"u1": 20, "u2": 10}, frozenset({"u2"}))
    right = [Observed("e1", "u1", 10, ()), Observed("e2", "u1", 20, ()), Observed("e3", "u2", 10, (BADGE,))]
    assert job.check(outcome, right) == []
    assert job.check(outcome, right[1:]) == ["1 events without an effect, e.g. e1"]
    assert job.check(outcome, [*right, right[0]]) == [
        "1 events with more than one effect, e.g. e1",
        "1 users with wrong coins, e.g. u1: 10, not 20",  # the copy came last
    ]
    assert job.check(outcome, [*right, Observed("x", "u2", 10, (BADGE,))]) == ["1 effects of events never sent, e.g. x"]
    twice = Observed("e3", "u2", 10, (BADGE, BADGE))
    assert job.check(outcome, [*right[:2], twice]) == [
        "1 users with a wrong badge, e.g. u2: ('five_lessons', 'five_lessons'), five_lessons once"
    ]
    assert job.check(Outcome(outcome.ids, outcome.coins, frozenset()), right) == [
        "1 users with a wrong badge, e.g. u2: ('five_lessons',), five_lessons not"
    ]


def test_the_report_lists_every_run_then_the_medians_and_their_ratios() -> None:
    runs = [
        Run(1, "sluice", 95_000, 10.0, 9_500.0, 70.0, "1%"),
        Run(1, "quix", 95_000, 5.0, 19_000.0, 40.0, "0%"),
        Run(2, "sluice", 95_000, 9.5, 10_000.0, 72.0, "0%"),
        Run(2, "quix", 95_000, 4.0, 23_750.0, 44.0, "0%", ["1 events with more than one effect, e.g. e1"]),
        Run(3, "sluice", 95_000, 8.0, 11_875.0, 68.0, "2%"),
        Run(3, "quix", 95_000, 5.0, 19_000.0, None, "-"),
    ]
    lines = report(runs)
    assert len(lines) == 1 + 6 + 3
    assert lines[1].split() == ["1", "sluice", "95,000", "10.00", "9,500", "70", "1%", "ok"]
    assert lines[4].endswith("WRONG: 1 events with more than one effect, e.g. e1")  # kept, and marked
    assert lines[6].split()[5] == "-"  # CPU unknown
    assert lines[7:] == [
        "median sluice     10,000 events/s, 70 µs CPU an event",
        "median quix       19,000 events/s, 42 µs CPU an event",
        "Sluice / Quix Streams: 0.53x the events/s, 1.67x the CPU an event",
    ]
