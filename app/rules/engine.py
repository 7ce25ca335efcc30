"""Apply a topic's rules, in order, to one user's state: (state, fact, rules) -> (state, effect)."""

from __future__ import annotations

from collections.abc import Sequence

from app.rules.model import AddCoins, Effect, Fact, Increment, Rule, UserState

NO_MATCHING_RULES = "no_matching_rules"


def apply(state: UserState, fact: Fact, rules: Sequence[Rule]) -> tuple[UserState, Effect]:
    coins = state.coins
    counters = dict(state.counters)
    coin_delta = 0
    counter_deltas: dict[str, int] = {}
    fired: list[str] = []
    for rule in rules:
        if not rule.matches(fact):
            continue
        fired.append(rule.id)
        for action in rule.actions:
            match action:
                case AddCoins(amount):
                    coins += amount
                    coin_delta += amount
                case Increment(counter, by):
                    counters[counter] = counters.get(counter, 0) + by
                    counter_deltas[counter] = counter_deltas.get(counter, 0) + by
    new_state = UserState(coins=coins, counters=counters)
    effect = Effect(
        rules_fired=tuple(fired),
        coins=coin_delta,
        counters=counter_deltas,
        totals=new_state,
        debug_reason=None if fired else NO_MATCHING_RULES,
    )
    return new_state, effect
