"""The rule engine: pure data and functions, no Kafka, Faust or HTTP."""

from app.rules.engine import apply
from app.rules.model import AddCoins, Effect, Fact, Increment, Rule, UserState
from app.rules.parse import parse_rules, rules_version

__all__ = [
    "AddCoins",
    "Effect",
    "Fact",
    "Increment",
    "Rule",
    "UserState",
    "apply",
    "parse_rules",
    "rules_version",
]
