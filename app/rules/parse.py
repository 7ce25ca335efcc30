"""Turn the `rules:` list of a topic file into Rule values, naming the file, rule and field on error."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import orjson

from app.core.conditions import Condition, at, parse_condition
from app.errors import ConfigError
from app.rules.model import (
    Action,
    AddPoints,
    AwardBadge,
    BadgeReady,
    Emit,
    EvolutionReady,
    GrantTokens,
    Increment,
    Rule,
    SetCounter,
    Stop,
    UpdateStreak,
)

ROOTS = ("type", "data", "state")
NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


class _Where:
    """Where in the file we are, for error messages: file, rule, field."""

    def __init__(self, source: str, rule: str, field: str = "") -> None:
        self.source, self.rule, self.field = source, rule, field

    def at(self, part: str) -> _Where:
        return _Where(self.source, self.rule, at(self.field, part))

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.source}: rule {self.rule}: {self.field}: {message}", field=self.field)


def parse_rules(raw: Any, *, source: str) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: 'rules' must be a list", field="rules")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ConfigError(f"{source}: rules[{index}]: must be a mapping", field=f"rules[{index}]")
        rule_id = item.get("id")
        if not isinstance(rule_id, str) or not rule_id:
            raise ConfigError(
                f"{source}: rules[{index}]: 'id' is required and must be a string", field=f"rules[{index}].id"
            )
        where = _Where(source, repr(rule_id))
        if rule_id in seen:
            raise where.at("id").error("duplicate rule id")
        seen.add(rule_id)
        _reject_unknown(item, {"id", "when", "then", "description"}, where)
        when = item.get("when")
        rules.append(
            Rule(
                id=rule_id,
                when=None if when is None else _condition(when, where.at("when")),
                actions=_actions(item.get("then"), where.at("then")),
            )
        )
    return tuple(rules)


def rules_version(raw: Any) -> str:
    """A short digest of the rules as written, recorded in every effect they produce."""
    canonical = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:12]


def _condition(raw: Any, where: _Where) -> Condition:
    def refuse(field: str, message: str) -> ConfigError:
        return _Where(where.source, where.rule, field).error(message)

    return parse_condition(raw, field=where.field, roots=ROOTS, refuse=refuse)


# Actions: one-key mappings, applied in order.


def _actions(raw: Any, where: _Where) -> tuple[Action, ...]:
    if not isinstance(raw, list) or not raw:
        raise where.error("must be a non-empty list of actions")
    actions: list[Action] = []
    for index, item in enumerate(raw):
        part = where.at(str(index))
        if item == "stop":
            actions.append(Stop())
            continue
        if not isinstance(item, dict) or len(item) != 1:
            raise part.error(f"an action is a one-key mapping: {', '.join(ACTIONS)}")
        ((kind, value),) = item.items()
        parser = ACTIONS.get(kind)
        if parser is None:
            raise part.error(f"unknown action {kind!r}; known: {', '.join(ACTIONS)}")
        actions.append(parser(value, part.at(kind)))
    return tuple(actions)


def _add_coins(value: Any, where: _Where) -> Action:
    return AddPoints(_int(value, where))


def _add_points(value: Any, where: _Where) -> Action:
    spec = _mapping(value, where, {"currency", "amount"}, required={"currency", "amount"})
    return AddPoints(_int(spec["amount"], where.at("amount")), _name(spec["currency"], where.at("currency")))


def _increment(value: Any, where: _Where) -> Action:
    if isinstance(value, str):
        return Increment(_name(value, where))
    spec = _mapping(value, where, {"counter", "by"}, required={"counter"})
    return Increment(_name(spec["counter"], where.at("counter")), _int(spec.get("by", 1), where.at("by")))


def _set_counter(value: Any, where: _Where) -> Action:
    spec = _mapping(value, where, {"counter", "value"}, required={"counter", "value"})
    return SetCounter(_name(spec["counter"], where.at("counter")), _int(spec["value"], where.at("value")))


def _award_badge(value: Any, where: _Where) -> Action:
    if isinstance(value, str):
        return AwardBadge(_name(value, where))
    spec = _mapping(value, where, {"badge", "counter", "at_least", "within"}, required={"badge"})
    badge = _name(spec["badge"], where.at("badge"))
    if "counter" in spec:
        if "within" in spec:
            raise where.error("use either counter/at_least or within, not both")
        return AwardBadge(
            badge, counter=_name(spec["counter"], where.at("counter")), at_least=_int(spec.get("at_least", 1), where)
        )
    if "within" in spec:
        window = _mapping(spec["within"], where.at("within"), {"events", "seconds"}, required={"events", "seconds"})
        events, seconds = _int(window["events"], where.at("within.events")), _int(window["seconds"], where)
        if events < 1 or seconds < 1:
            raise where.at("within").error("events and seconds must be at least 1")
        return AwardBadge(badge, window_events=events, window_seconds=seconds)
    return AwardBadge(badge)


def _badge_ready(value: Any, where: _Where) -> Action:
    return BadgeReady(_name(value, where))


def _grant_tokens(value: Any, where: _Where) -> Action:
    if isinstance(value, str):
        return GrantTokens(_name(value, where))
    spec = _mapping(value, where, {"token", "amount"}, required={"token"})
    return GrantTokens(_name(spec["token"], where.at("token")), _int(spec.get("amount", 1), where.at("amount")))


def _update_streak(value: Any, where: _Where) -> Action:
    spec = {} if value is None or value is True else _mapping(value, where, {"name", "timezone", "milestones"})
    timezone = spec.get("timezone", "UTC")
    try:
        ZoneInfo(str(timezone))
    except (ZoneInfoNotFoundError, ValueError):
        raise where.at("timezone").error(f"unknown time zone {timezone!r}") from None
    milestones = spec.get("milestones", [])
    if not isinstance(milestones, list) or not all(isinstance(m, int) and m > 0 for m in milestones):
        raise where.at("milestones").error("must be a list of positive day counts")
    return UpdateStreak(_name(spec.get("name", "daily"), where.at("name")), str(timezone), tuple(sorted(milestones)))


def _evolution_ready(value: Any, where: _Where) -> Action:
    spec = _mapping(value, where, {"currency", "levels"}, required={"levels"})
    levels = spec["levels"]
    if not isinstance(levels, list) or not levels or not all(isinstance(x, int) and x > 0 for x in levels):
        raise where.at("levels").error("must be a non-empty list of positive thresholds")
    return EvolutionReady(_name(spec.get("currency", "coins"), where.at("currency")), tuple(sorted(levels)))


def _emit(value: Any, where: _Where) -> Action:
    if isinstance(value, str):
        return Emit(_name(value, where))
    spec = _mapping(value, where, {"name", "payload"}, required={"name"})
    payload = spec.get("payload", {})
    if not isinstance(payload, dict):
        raise where.at("payload").error("must be a mapping")
    return Emit(_name(spec["name"], where.at("name")), payload)


def _stop(value: Any, where: _Where) -> Action:
    if value is not True:
        raise where.error("write `stop: true` (or just `- stop`)")
    return Stop()


ACTIONS: dict[str, Callable[[Any, _Where], Action]] = {
    "add_coins": _add_coins,
    "add_points": _add_points,
    "increment": _increment,
    "set_counter": _set_counter,
    "award_badge": _award_badge,
    "badge_ready": _badge_ready,
    "grant_tokens": _grant_tokens,
    "update_streak": _update_streak,
    "evolution_ready": _evolution_ready,
    "emit": _emit,
    "stop": _stop,
}


def _mapping(
    value: Any, where: _Where, known: set[str], required: set[str] | frozenset[str] = frozenset()
) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise where.error(f"must be a mapping with {', '.join(sorted(known))}")
    _reject_unknown(value, known, where)
    for name in sorted(required - set(value)):
        raise where.at(name).error("is required")
    return value


def _int(value: Any, where: _Where) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise where.error("must be an integer")
    return value


def _name(value: Any, where: _Where) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise where.error("must be a name of letters, digits, '_', '.', ':' or '-' (at most 64)")
    return value


def _reject_unknown(raw: dict[str, Any], known: set[str], where: _Where) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise where.at(unknown[0]).error(f"unknown key; known: {', '.join(sorted(known))}")
