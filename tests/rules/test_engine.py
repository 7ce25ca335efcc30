from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.core.instants import epoch_ms
from app.rules import Fact, UserState, apply, parse_rules
from app.rules.model import Rule, Streak

AT = datetime(2026, 4, 22, 10, 30, tzinfo=UTC)


def rules(yaml_rules: list[dict[str, Any]]) -> tuple[Rule, ...]:
    return parse_rules(yaml_rules, source="test.yaml")


def run(rule_list: list[dict[str, Any]], *facts: Fact, state: UserState | None = None) -> tuple[UserState, Any]:
    compiled = rules(rule_list)
    state = state or UserState()
    effect = None
    for fact in facts:
        state, effect = apply(state, fact, compiled)
    return state, effect


def fact(kind: str = "e", at: datetime = AT, **data: Any) -> Fact:
    return Fact(kind, at, data)


# Conditions


@pytest.mark.parametrize(
    ("condition", "data", "matches"),
    [
        ({"field": "data.score", "eq": 3}, {"score": 3}, True),
        ({"field": "data.score", "ne": 3}, {"score": 4}, True),
        ({"field": "data.score", "gt": 3}, {"score": 3}, False),
        ({"field": "data.score", "gte": 3}, {"score": 3}, True),
        ({"field": "data.score", "lt": 3}, {"score": 2.5}, True),
        ({"field": "data.score", "lte": 3}, {"score": 4}, False),
        ({"field": "data.plan", "in": ["pro", "team"]}, {"plan": "pro"}, True),
        ({"field": "data.plan", "not_in": ["pro", "team"]}, {"plan": "free"}, True),
        ({"field": "data.coupon", "exists": True}, {"coupon": None}, True),
        ({"field": "data.coupon", "exists": False}, {}, True),
        ({"field": "data.tags", "contains": "vip"}, {"tags": ["new", "vip"]}, True),
        ({"field": "data.email", "contains": "@acme."}, {"email": "a@acme.io"}, True),
        ({"field": "data.sku", "matches": "^book-[0-9]+$"}, {"sku": "book-17"}, True),
        ({"field": "data.sku", "matches": "^book-[0-9]+$"}, {"sku": "pen-1"}, False),
        ({"field": "data.a.b", "eq": 1}, {"a": {"b": 1}}, True),
        ({"field": "data.missing", "eq": 1}, {}, False),
        ({"field": "data.missing", "ne": 1}, {}, True),
        ({"field": "data.score", "gt": 3}, {"score": "high"}, False),  # a type mismatch never matches
        ({"all": [{"type": "e"}, {"field": "data.x", "eq": 1}]}, {"x": 1}, True),
        ({"any": [{"type": "other"}, {"field": "data.x", "eq": 1}]}, {"x": 1}, True),
        ({"not": {"field": "data.x", "eq": 1}}, {"x": 1}, False),
        ({"type": ["a", "e"]}, {}, True),
        ({"type": "a"}, {}, False),
    ],
)
def test_conditions(condition: dict[str, Any], data: dict[str, Any], matches: bool) -> None:
    _, effect = run([{"id": "r", "when": condition, "then": [{"add_coins": 1}]}], fact(**data))
    assert (effect.rules_fired == ("r",)) is matches


def test_conditions_read_the_users_state() -> None:
    rule_list = [
        {"id": "count", "then": [{"increment": "logins"}]},
        {"id": "third", "when": {"field": "state.counters.logins", "eq": 3}, "then": [{"add_coins": 50}]},
        {
            "id": "no-badge-yet",
            "when": {"not": {"field": "state.badges", "contains": "early"}},
            "then": [{"award_badge": "early"}],
        },
        {"id": "rich", "when": {"field": "state.coins", "gte": 50}, "then": [{"emit": "rich"}]},
    ]
    compiled = rules(rule_list)
    state, effects = UserState(), []
    for _ in range(4):
        state, effect = apply(state, fact(), compiled)
        effects.append(effect)
    assert [e.rules_fired for e in effects] == [
        ("count", "no-badge-yet"),
        ("count",),
        ("count", "third", "rich"),  # later rules see the state as earlier rules left it
        ("count", "rich"),
    ]


def test_state_lists_compare_equal_to_the_lists_a_rule_file_gives() -> None:
    compiled = rules(
        [{"id": "only-gold", "when": {"field": "state.badges", "eq": ["gold"]}, "then": [{"add_coins": 1}]}]
    )
    _, effect = apply(UserState(badges=("gold",)), fact(), compiled)
    assert effect.rules_fired == ("only-gold",)


# Actions


def test_points_in_any_currency_negative_allowed() -> None:
    state, effect = run(
        [{"id": "r", "then": [{"add_coins": 10}, {"add_points": {"currency": "gems", "amount": -3}}]}], fact()
    )
    assert state.points == {"coins": 10, "gems": -3}
    assert effect.points == {"coins": 10, "gems": -3}


def test_counters_increment_and_set() -> None:
    state, effect = run(
        [
            {
                "id": "r",
                "then": [{"increment": {"counter": "a", "by": 5}}, {"set_counter": {"counter": "b", "value": 7}}],
            }
        ],
        fact(),
        state=UserState(counters={"b": 2}),
    )
    assert state.counters == {"a": 5, "b": 7}
    assert effect.counters == {"a": 5, "b": 5}


def test_a_badge_is_awarded_once() -> None:
    compiled = rules([{"id": "r", "then": [{"award_badge": "first"}]}])
    state, first = apply(UserState(), fact(), compiled)
    state, second = apply(state, fact(), compiled)
    assert first.badges_awarded == ("first",)
    assert second.badges_awarded == ()
    assert state.badges == ("first",)
    assert second.debug_reason == "no_state_change"


def test_threshold_badge_on_a_counter() -> None:
    compiled = rules(
        [{"id": "r", "then": [{"increment": "n"}, {"award_badge": {"badge": "ten", "counter": "n", "at_least": 3}}]}]
    )
    state, awarded = UserState(), []
    for _ in range(4):
        state, effect = apply(state, fact(), compiled)
        awarded.append(effect.badges_awarded)
    assert awarded == [(), (), ("ten",), ()]


def test_n_events_within_a_window_badge() -> None:
    compiled = rules(
        [{"id": "r", "then": [{"award_badge": {"badge": "burst", "within": {"events": 3, "seconds": 60}}}]}]
    )
    state = UserState()
    times = [AT, AT + timedelta(seconds=50), AT + timedelta(seconds=70), AT + timedelta(seconds=100)]
    awarded = []
    for moment in times:
        state, effect = apply(state, fact(at=moment), compiled)
        awarded.append(effect.badges_awarded)
    # 0 s and 50 s: two; 70 s: only 50 and 70 are within 60 s of it; 100 s: 50, 70, 100.
    assert awarded == [(), (), (), ("burst",)]
    assert state.windows == {}


def test_badge_ready_then_awarded_moves_it() -> None:
    compiled = rules(
        [
            {"id": "ready", "when": {"type": "earn"}, "then": [{"badge_ready": "gold"}]},
            {"id": "claim", "when": {"type": "claim"}, "then": [{"award_badge": "gold"}]},
        ]
    )
    state, effect = apply(UserState(), fact("earn"), compiled)
    assert (effect.badges_ready, state.badges_ready) == (("gold",), ("gold",))
    state, effect = apply(state, fact("claim"), compiled)
    assert (effect.badges_awarded, state.badges, state.badges_ready) == (("gold",), ("gold",), ())


def test_tokens_and_custom_effects() -> None:
    _, effect = run(
        [
            {
                "id": "r",
                "then": [
                    {"grant_tokens": {"token": "hint", "amount": 2}},
                    {"emit": {"name": "confetti", "payload": {"n": 3}}},
                ],
            }
        ],
        fact(),
    )
    assert effect.tokens == {"hint": 2}
    assert effect.emitted == (("confetti", {"n": 3}),)
    assert effect.to_dict()["changes"]["custom"] == [{"name": "confetti", "payload": '{"n":3}'}]


def test_stop_hides_the_event_from_later_rules() -> None:
    _, effect = run(
        [
            {"id": "a", "then": [{"add_coins": 1}, "stop", {"add_coins": 100}]},
            {"id": "b", "then": [{"add_coins": 1000}]},
        ],
        fact(),
    )
    assert effect.rules_fired == ("a",)
    assert effect.coins == 1


def test_streaks_count_consecutive_days_in_the_rules_time_zone() -> None:
    # 03:30 and 23:00 UTC on 2 Nov 2026 are one day in UTC, but 22:30 on the 1st and
    # 18:00 on the 2nd in New York (EST, UTC-5): two days there.
    first, second = datetime(2026, 11, 2, 3, 30, tzinfo=UTC), datetime(2026, 11, 2, 23, 0, tzinfo=UTC)
    new_york = rules([{"id": "s", "then": [{"update_streak": {"timezone": "America/New_York", "milestones": [2]}}]}])
    state, _ = apply(UserState(), fact(at=first), new_york)
    state, effect = apply(state, fact(at=second), new_york)
    assert state.streaks["daily"].current == 2
    assert effect.streak_milestones == (("daily", 2),)

    utc = rules([{"id": "s", "then": [{"update_streak": {}}]}])
    other, _ = apply(UserState(), fact(at=first), utc)
    other, _ = apply(other, fact(at=second), utc)
    assert other.streaks["daily"].current == 1
    other, _ = apply(other, fact(at=datetime(2026, 11, 3, 1, 0, tzinfo=UTC)), utc)
    assert other.streaks["daily"].current == 2
    other, _ = apply(other, fact(at=datetime(2026, 11, 5, 1, 0, tzinfo=UTC)), utc)
    assert (other.streaks["daily"].current, other.streaks["daily"].longest) == (1, 2)


def test_a_late_event_does_not_break_a_streak() -> None:
    compiled = rules([{"id": "s", "then": [{"update_streak": {}}]}])
    state, _ = apply(UserState(), fact(at=AT), compiled)
    state, _ = apply(state, fact(at=AT + timedelta(days=1)), compiled)
    state, _ = apply(state, fact(at=AT - timedelta(days=3)), compiled)
    assert state.streaks["daily"].current == 2


def test_evolution_ready_when_crossing_a_level() -> None:
    compiled = rules(
        [
            {
                "id": "r",
                "then": [
                    {"add_points": {"currency": "xp", "amount": 60}},
                    {"evolution_ready": {"currency": "xp", "levels": [100, 200]}},
                ],
            }
        ]
    )
    state, flags = UserState(), []
    for _ in range(4):
        state, effect = apply(state, fact(), compiled)
        flags.append(effect.evolution_ready)
    assert flags == [False, True, False, True]  # 60, 120 (>=100), 180, 240 (>=200)
    assert state.levels == {"xp": 200}


def test_no_matching_rules_and_no_state_change_are_explained() -> None:
    _, effect = run([{"id": "r", "when": {"type": "x"}, "then": [{"add_coins": 1}]}], fact())
    assert effect.debug_reason == "no_matching_rules"
    _, effect = run([{"id": "r", "then": [{"add_coins": 0}]}], fact())
    assert effect.debug_reason == "no_state_change"


def test_input_state_is_not_mutated_and_state_round_trips() -> None:
    # The engine shares the state's collections until a rule changes one: every kind of change
    # must leave the state it was given as it was.
    before = UserState(
        points={"coins": 5, "xp": 90},
        counters={"n": 1},
        badges=("a",),
        badges_ready=("b",),
        tokens={"hint": 1},
        streaks={"daily": Streak(current=2, longest=2, last_day=AT.date().toordinal() - 1)},
        levels={"xp": 50},
        windows={"w:burst": (epoch_ms(AT) - 1000,)},
    )
    snapshot = before.to_dict()
    after, effect = run(
        [
            {
                "id": "r",
                "then": [
                    {"increment": "n"},
                    {"add_points": {"currency": "xp", "amount": 20}},
                    {"award_badge": "b"},
                    {"badge_ready": "c"},
                    {"grant_tokens": {"token": "hint", "amount": 2}},
                    {"update_streak": {"name": "daily"}},
                    {"evolution_ready": {"currency": "xp", "levels": [100]}},
                ],
            },
            {"id": "w", "then": [{"award_badge": {"badge": "burst", "within": {"events": 3, "seconds": 60}}}]},
        ],
        fact(),
        state=before,
    )
    assert before.to_dict() == snapshot
    assert after.to_dict() != snapshot
    assert (after.badges, after.badges_ready, after.tokens, after.levels) == (
        ("a", "b"),
        ("c",),
        {"hint": 3},
        {"xp": 100},
    )
    assert after.streaks["daily"].current == 3 and after.windows["w:burst"] == (epoch_ms(AT) - 1000, epoch_ms(AT))
    assert UserState.from_dict(after.to_dict()) == after
    after, effect = run(
        [{"id": "r", "then": [{"increment": "n"}, {"award_badge": "b"}, {"update_streak": {}}]}],
        fact(),
        state=UserState(),
    )
    assert effect.gamification() == {
        "coins": 0,
        "badges_awarded": ["b"],
        "badges_ready": [],
        "tokens": [],
        "evolution_ready": False,
        "streak_milestones": [],
    }
