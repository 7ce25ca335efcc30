"""`apply_to_record`, the worker's path through the engine, against `apply` and `Effect.to_dict` over random events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from hypothesis import given
from hypothesis import strategies as st

from app.catalog import Catalog
from app.rules import Fact, UserState, apply, apply_to_record, parse_rules

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.load(REPO / "topics")
T0 = datetime(2026, 11, 1, 22, 30, tzinfo=UTC)

# Every action, with deltas that can cancel out (zero deltas are dropped from an effect).
EVERY_ACTION = parse_rules(
    yaml.safe_load(
        """
        - {id: points, when: {type: a}, then: [{add_coins: 5}, {add_points: {currency: xp, amount: 30}}]}
        - {id: undo, when: {type: b}, then: [{add_coins: -5}, {increment: n}, {increment: {counter: n, by: -1}}]}
        - {id: count, then: [{increment: events}]}
        - {id: set, when: {field: data.level, exists: true}, then: [{set_counter: {counter: level, value: 2}}]}
        - {id: first, then: [{award_badge: first}]}
        - {id: tenth, then: [{award_badge: {badge: ten, counter: events, at_least: 10}}]}
        - {id: burst, when: {type: a}, then: [{award_badge: {badge: burst, within: {events: 3, seconds: 3600}}}]}
        - {id: ready, when: {type: b}, then: [{badge_ready: claimable}]}
        - {id: claim, when: {type: c}, then: [{award_badge: claimable}]}
        - {id: tokens, when: {type: c}, then: [{grant_tokens: {token: hint, amount: 1}}]}
        - {id: streak, then: [{update_streak: {name: daily, timezone: Europe/Paris, milestones: [2, 3]}}]}
        - {id: evolve, then: [{evolution_ready: {currency: xp, levels: [50, 100]}}]}
        - {id: emit, when: {field: data.n, gt: 2}, then: [{emit: {name: big, payload: {k: 1}}}]}
        - {id: halt, when: {field: data.n, eq: 0}, then: [stop]}
        - {id: after-halt, then: [{add_coins: 1}]}
        """
    ),
    source="test.yaml",
)
RULE_SETS = [EVERY_ACTION, *(spec.rules for spec in CATALOG.values() if spec.rules)]

facts = st.builds(
    Fact,
    st.sampled_from(["a", "b", "c", "d", "order_placed", "orders", "lesson_completed", "quiz_passed", "page"]),
    st.integers(0, 10 * 24 * 60).map(lambda minutes: T0 + timedelta(minutes=minutes)),
    st.fixed_dictionaries(
        {}, optional={"n": st.integers(0, 5), "level": st.integers(0, 3), "score": st.integers(0, 100)}
    ),
)


@given(st.sampled_from(range(len(RULE_SETS))), st.lists(facts, max_size=25))
def test_apply_to_record_is_apply_then_to_dict(which: int, events: list[Fact]) -> None:
    rules = RULE_SETS[which]
    reference = fast = UserState()
    for fact in events:
        reference, effect = apply(reference, fact, rules)
        fast, record = apply_to_record(fast, fact, rules)
        assert fast == reference
        assert record == effect.to_dict()


def test_every_action_rule_set_changes_each_part_of_an_effect() -> None:
    """The rules above reach every field of an effect, so the comparison covers each."""
    seen: dict[str, Any] = {}
    state = UserState()
    for minutes, kind, data in [(0, "a", {"n": 3}), (1, "a", {}), (2, "a", {}), (60 * 24, "b", {"level": 1})]:
        state, record = apply_to_record(state, Fact(kind, T0 + timedelta(minutes=minutes), data), EVERY_ACTION)
        seen |= {key: value for key, value in record["changes"].items() if value}
    state, record = apply_to_record(state, Fact("c", T0 + timedelta(days=2), {"n": 0}), EVERY_ACTION)
    seen |= {key: value for key, value in record["changes"].items() if value}
    assert set(seen) == set(record["changes"])
