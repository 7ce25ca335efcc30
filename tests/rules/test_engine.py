from datetime import UTC, datetime

from app.rules import AddCoins, Fact, Increment, Rule, UserState, apply

AT = datetime(2026, 4, 22, 10, 30, tzinfo=UTC)
RULES = (
    Rule("count", (Increment("events"),)),
    Rule("coins", (AddCoins(10), Increment("paid", by=2)), event_types=frozenset({"paid"})),
    Rule("refund", (AddCoins(-4),), event_types=frozenset({"refund"})),
)


def test_rules_apply_in_order_and_report_changes_and_totals() -> None:
    state, effect = apply(UserState(coins=5, counters={"events": 1}), Fact("paid", AT), RULES)
    assert effect.rules_fired == ("count", "coins")
    assert effect.coins == 10
    assert effect.counters == {"events": 1, "paid": 2}
    assert state == UserState(coins=15, counters={"events": 2, "paid": 2})
    assert effect.totals == state
    assert effect.debug_reason is None


def test_negative_coins_are_allowed() -> None:
    state, effect = apply(UserState(coins=1), Fact("refund", AT), RULES)
    assert state.coins == -3
    assert effect.coins == -4


def test_no_matching_rule_explains_itself() -> None:
    state, effect = apply(UserState(coins=3), Fact("other", AT), RULES[1:])
    assert state == UserState(coins=3)
    assert effect.rules_fired == ()
    assert effect.debug_reason == "no_matching_rules"


def test_input_state_is_not_mutated() -> None:
    before = UserState(counters={"events": 1})
    apply(before, Fact("paid", AT), RULES)
    assert before.counters == {"events": 1}
