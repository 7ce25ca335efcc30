"""The compiled core against the Python ledger and engine: random rules and events, the same bytes out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app import native
from app.catalog import TopicSpec
from app.core.envelope import Envelope
from app.core.instants import epoch_ms
from app.rules import parse_rules, rules_version
from tests.native.support import EVENT, SCHEMAS, Twin

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="the compiled core is not built")

START = datetime(2026, 3, 28, 20, 0, tzinfo=UTC)  # near a daylight-saving change in Europe
WINDOW_S = 6 * 3600
NAMES = st.sampled_from(["a", "b", "c1", "coins", "xp"])
TYPES = ["lesson", "quiz", "other"]
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"]

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 3),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.5, 1.0, 2.0, -0.0, 0.9]),
    st.sampled_from(["a", "b", "lesson", "", "é", "a\nb"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["x", "y", "a"]), inner, max_size=3),
    max_leaves=6,
)
PATHS = [
    "type",
    "type.x",
    "data",
    "data.x",
    "data.x.y",
    "data.y",
    "state",
    "state.coins",
    "state.points.xp",
    "state.counters.c1",
    "state.counters",
    "state.badges",
    "state.badges_ready",
    "state.tokens.a",
    "state.streaks.daily",
    "state.streaks",
    "state.nope",
]


@st.composite
def compares(draw: st.DrawFn) -> dict[str, Any]:
    op = draw(st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "contains"]))
    value: Any
    if op in ("in", "not_in"):
        value = draw(st.lists(values, max_size=3))
    elif op == "exists":
        value = draw(st.booleans())
    else:
        value = draw(values)
    return {"field": draw(st.sampled_from(PATHS)), op: value}


conditions = st.recursive(
    compares()
    | st.builds(lambda t: {"type": t}, st.sampled_from(TYPES) | st.lists(st.sampled_from(TYPES), min_size=1)),
    lambda inner: (
        st.builds(lambda xs: {"all": xs}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda xs: {"any": xs}, st.lists(inner, min_size=1, max_size=3))
        | st.builds(lambda x: {"not": x}, inner)
    ),
    max_leaves=4,
)
amounts = st.integers(-5, 20)
actions = st.one_of(
    st.builds(lambda n: {"add_coins": n}, amounts),
    st.builds(lambda c, n: {"add_points": {"currency": c, "amount": n}}, NAMES, amounts),
    st.builds(lambda c: {"increment": c}, NAMES),
    st.builds(lambda c, n: {"increment": {"counter": c, "by": n}}, NAMES, amounts),
    st.builds(lambda c, n: {"set_counter": {"counter": c, "value": n}}, NAMES, amounts),
    st.builds(lambda b: {"award_badge": b}, NAMES),
    st.builds(lambda b, c, n: {"award_badge": {"badge": b, "counter": c, "at_least": n}}, NAMES, NAMES, amounts),
    st.builds(
        lambda b, e, s: {"award_badge": {"badge": b, "within": {"events": e, "seconds": s}}},
        NAMES,
        st.integers(1, 4),
        st.integers(1, 7200),
    ),
    st.builds(lambda b: {"badge_ready": b}, NAMES),
    st.builds(lambda t: {"grant_tokens": t}, NAMES),
    st.builds(lambda t, n: {"grant_tokens": {"token": t, "amount": n}}, NAMES, amounts),
    st.builds(
        lambda n, z, m: {"update_streak": {"name": n, "timezone": z, "milestones": m}},
        st.sampled_from(["daily", "other"]),
        st.sampled_from(ZONES),
        st.lists(st.integers(1, 4), max_size=3),
    ),
    st.just({"update_streak": None}),
    st.builds(
        lambda c, ls: {"evolution_ready": {"currency": c, "levels": ls}},
        NAMES,
        st.lists(st.integers(1, 60), min_size=1, max_size=3),
    ),
    st.builds(lambda n: {"emit": n}, NAMES),
    st.builds(
        lambda n, p: {"emit": {"name": n, "payload": p}},
        NAMES,
        st.dictionaries(st.sampled_from(["k", "é"]), values, max_size=2),
    ),
    st.just("stop"),
)


@st.composite
def rulebooks(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(1, 4))
    rules = []
    for index in range(count):
        rule: dict[str, Any] = {"id": f"r{index}", "then": draw(st.lists(actions, min_size=1, max_size=3))}
        when = draw(st.none() | conditions)
        if when is not None:
            rule["when"] = when
        rules.append(rule)
    return rules


def topic(slug: str, raw: list[dict[str, Any]]) -> TopicSpec:
    return TopicSpec(slug, f"events.{slug}", "", parse_rules(raw, source=slug), rules_version(raw))


@st.composite
def events(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 30)) == 0:
        return draw(st.binary(max_size=20))  # not an event at all
    occurred = START + timedelta(minutes=draw(st.integers(0, 6 * 24 * 60)))
    envelope = Envelope(
        id=draw(st.sampled_from(["e1", "e2", "e3", "e4", "e5", "e6", "e7", "e8"])),
        tenant=draw(st.sampled_from(["t1", "t2"])),
        topic=draw(st.sampled_from(["one", "one", "two", "unknown"])),
        type=draw(st.sampled_from(TYPES)),
        user_id=draw(st.sampled_from(["u1", "u2", "u3"])),
        occurred_at=occurred,
        received_at=START + timedelta(hours=draw(st.integers(-12, 30))),
        dialect="pubsub",
        data=draw(st.dictionaries(st.sampled_from(["x", "y", "n"]), values, max_size=3)),
    )
    return envelope.encode(EVENT)


@st.composite
def batches(draw: st.DrawFn) -> list[list[tuple[bytes, str, int]]]:
    """Batches of records: new ones at the next offset, or a record seen before delivered again."""
    seen: list[tuple[bytes, str, int]] = []
    offset = 0
    out = []
    for _ in range(draw(st.integers(1, 4))):
        batch = []
        for _ in range(draw(st.integers(1, 8))):
            if seen and draw(st.integers(0, 4)) == 0:
                batch.append(draw(st.sampled_from(seen)))
            else:
                record = (draw(events()), "events.src", offset)
                offset += 1
                seen.append(record)
                batch.append(record)
        out.append(batch)
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(one=rulebooks(), two=rulebooks(), runs=batches(), hours=st.lists(st.integers(0, 8), min_size=4, max_size=4))
def test_the_compiled_core_writes_what_the_python_engine_writes(
    one: list[dict[str, Any]], two: list[dict[str, Any]], runs: list[list[tuple[bytes, str, int]]], hours: list[int]
) -> None:
    topics = {"one": topic("one", one), "two": topic("two", two)}
    program = native.compile_rulebook(topics, SCHEMAS)
    assert program is not None
    twin = Twin(topics, program)
    now = START + timedelta(hours=12)
    for number, (records, step) in enumerate(zip(runs, hours, strict=False)):
        now += timedelta(hours=step)
        twin.batch(records, now=now, window_s=WINDOW_S, generation=number // 2)


def test_rules_it_does_not_compile_leave_the_topics_to_the_python_engine() -> None:
    matching = [{"id": "r", "when": {"field": "data.name", "matches": "^a"}, "then": [{"add_coins": 1}]}]
    dated = [{"id": "r", "when": {"field": "data.day", "eq": datetime(2026, 1, 1).date()}, "then": ["stop"]}]
    for raw in (matching, dated):
        assert native.compile_rulebook({"ok": topic("ok", []), "t": topic("t", raw)}, SCHEMAS) is None
    assert native.compile_rulebook({"ok": topic("ok", [])}, SCHEMAS) is not None


def test_a_batch_counts_what_the_worker_metrics_count() -> None:
    raw = [{"id": "all", "then": [{"add_coins": 1}]}, {"id": "quizzes", "when": {"type": "quiz"}, "then": ["stop"]}]
    program = native.compile_rulebook({"one": topic("one", raw)}, SCHEMAS)
    assert program is not None

    def event(id: str, kind: str, hours: int) -> bytes:
        at = START + timedelta(hours=hours)
        envelope = Envelope(
            id=id, tenant="t", topic="one", type=kind, user_id="u", occurred_at=at, received_at=at, dialect="pubsub"
        )
        return envelope.encode(EVENT)

    table: dict[bytes, bytes] = {}
    now = START + timedelta(hours=3)
    first = native.new_batch(program, table.get, now=now, dedupe_window_s=WINDOW_S)
    assert first.tally() == (0, 0, {}, [])
    lesson, quiz = event("e1", "lesson", 1), event("e2", "quiz", 2)
    for value, offset in ((lesson, 0), (quiz, 1), (lesson, 2), (b"not an event", 3)):
        first.step(value, "events.src", offset)
    ms = [epoch_ms(START + timedelta(hours=h)) for h in (1, 2)]
    assert first.tally() == (2, 1, {("one", "all"): 2, ("one", "quizzes"): 1}, ms)
    table.update(first.entries)
    table.update(first.users)
    again = native.new_batch(program, table.get, now=now, dedupe_window_s=WINDOW_S)
    again.step(quiz, "events.src", 1)  # redelivered: its effect is written again, no rule fires
    assert again.tally() == (0, 0, {}, ms[1:])
