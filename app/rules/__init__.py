"""The rule engine: pure data and functions, no Kafka, Faust or HTTP."""

from app.rules.engine import apply, apply_to_record
from app.rules.model import (
    AddPoints,
    AwardBadge,
    BadgeReady,
    Effect,
    Emit,
    EvolutionReady,
    Fact,
    FactLike,
    GrantTokens,
    Increment,
    Rule,
    SetCounter,
    Stop,
    Streak,
    UpdateStreak,
    UserState,
)
from app.rules.parse import parse_rules, rules_version

__all__ = [
    "AddPoints",
    "AwardBadge",
    "BadgeReady",
    "Effect",
    "Emit",
    "EvolutionReady",
    "Fact",
    "FactLike",
    "GrantTokens",
    "Increment",
    "Rule",
    "SetCounter",
    "Stop",
    "Streak",
    "UpdateStreak",
    "UserState",
    "apply",
    "apply_to_record",
    "parse_rules",
    "rules_version",
]
