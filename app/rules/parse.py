"""Turn the `rules:` list of a topic file into Rule values, naming the file, rule and field on error."""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from app.errors import ConfigError
from app.rules.model import Action, AddCoins, Increment, Rule

ACTION_KINDS = ("add_coins", "increment")


def parse_rules(raw: Any, *, source: str) -> tuple[Rule, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: 'rules' must be a list", field="rules")
    rules: list[Rule] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"{source}: rules[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: must be a mapping", field=f"rules[{index}]")
        rule_id = item.get("id")
        if not isinstance(rule_id, str) or not rule_id:
            raise ConfigError(f"{where}: 'id' is required and must be a string", field=f"rules[{index}].id")
        where = f"{source}: rule {rule_id!r}"
        if rule_id in seen:
            raise ConfigError(f"{where}: duplicate rule id", field=f"rules[{index}].id")
        seen.add(rule_id)
        _reject_unknown(item, {"id", "when", "then", "description"}, where)
        rules.append(
            Rule(
                id=rule_id,
                event_types=_parse_when(item.get("when"), where),
                actions=_parse_actions(item.get("then"), where),
            )
        )
    return tuple(rules)


def rules_version(raw: Any) -> str:
    """A short digest of the rules as written, recorded in every effect they produce."""
    canonical = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()[:12]


def _parse_when(raw: Any, where: str) -> frozenset[str]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'when' must be a mapping", field="when")
    _reject_unknown(raw, {"type"}, f"{where}: when")
    types = raw.get("type")
    if isinstance(types, str):
        return frozenset({types})
    if isinstance(types, list) and types and all(isinstance(t, str) for t in types):
        return frozenset(types)
    raise ConfigError(f"{where}: 'when.type' must be a string or a list of strings", field="when.type")


def _parse_actions(raw: Any, where: str) -> tuple[Action, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where}: 'then' must be a non-empty list of actions", field="then")
    actions: list[Action] = []
    for index, item in enumerate(raw):
        field = f"then[{index}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(
                f"{where}: {field} must be one of {', '.join(ACTION_KINDS)} (a one-key mapping)", field=field
            )
        ((kind, value),) = item.items()
        if kind == "add_coins":
            if not _is_int(value):
                raise ConfigError(f"{where}: {field}.add_coins must be an integer", field=f"{field}.add_coins")
            actions.append(AddCoins(value))
        elif kind == "increment":
            actions.append(_parse_increment(value, where, f"{field}.increment"))
        else:
            raise ConfigError(
                f"{where}: {field}: unknown action {kind!r}; known: {', '.join(ACTION_KINDS)}", field=field
            )
    return tuple(actions)


def _parse_increment(value: Any, where: str, field: str) -> Increment:
    if isinstance(value, str) and value:
        return Increment(value)
    if isinstance(value, dict):
        _reject_unknown(value, {"counter", "by"}, f"{where}: {field}")
        counter, by = value.get("counter"), value.get("by", 1)
        if isinstance(counter, str) and counter and _is_int(by):
            return Increment(counter, by)
    raise ConfigError(f"{where}: {field} must be a counter name or {{counter: name, by: integer}}", field=field)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reject_unknown(raw: dict[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(known))}", field=unknown[0])
