"""The condition language of rules and subscription filters: `{field, <op>: value}`, `all`, `any`, `not`. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from app.errors import SluiceError

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "not_in", "exists", "contains", "matches")
# What a path resolves to when the record has no such field.
MISSING: Any = object()

# Builds the error a parse raises: (the field, as the caller names it, and why) -> the error.
Refusal = Callable[[str, str], SluiceError]


@dataclass(frozen=True, slots=True)
class Compare:
    """`{field: data.score, gte: 0.9}`: a path into the record, an operator, a value."""

    path: tuple[str, ...]
    op: str
    value: Any
    pattern: re.Pattern[str] | None = None  # compiled once for `matches`


@dataclass(frozen=True, slots=True)
class AllOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    items: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Condition


Condition = Compare | AllOf | AnyOf | Not


def at(field: str, part: str) -> str:
    """The name of `part` inside `field`: list positions read as `all[0]`, like the API's `events[2].type`."""
    if part.isdigit():
        return f"{field}[{part}]"
    return f"{field}.{part}" if field else part


def parse_condition(raw: Any, *, field: str, roots: tuple[str, ...], refuse: Refusal) -> Condition:
    """`type: x`, `{field: path, <op>: value}`, `all: [...]`, `any: [...]`, `not: {...}`; several keys must all hold.

    A path starts with one of `roots`; every refusal names the field inside `field` that is wrong.
    """
    if not isinstance(raw, dict) or not raw:
        raise refuse(field, "a condition must be a non-empty mapping")
    if "field" in raw:
        return _compare(raw, field, roots, refuse)
    parts: list[Condition] = []
    for key, value in raw.items():
        part = at(field, key)
        if key == "type":
            types = [value] if isinstance(value, str) else value
            if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
                raise refuse(part, "must be an event type or a list of them")
            parts.append(Compare(("type",), "in", tuple(types)))
        elif key in ("all", "any"):
            if not isinstance(value, list) or not value:
                raise refuse(part, "must be a non-empty list of conditions")
            items = tuple(
                parse_condition(item, field=at(part, str(i)), roots=roots, refuse=refuse)
                for i, item in enumerate(value)
            )
            parts.append(AllOf(items) if key == "all" else AnyOf(items))
        elif key == "not":
            parts.append(Not(parse_condition(value, field=part, roots=roots, refuse=refuse)))
        else:
            raise refuse(part, "unknown condition; use type, field, all, any or not")
    return parts[0] if len(parts) == 1 else AllOf(tuple(parts))


def _compare(raw: dict[str, Any], field: str, roots: tuple[str, ...], refuse: Refusal) -> Compare:
    path = raw["field"]
    if not isinstance(path, str) or path.split(".")[0] not in roots or "" in path.split("."):
        example = "data.score" if "data" in roots else f"{roots[-1]}.name"
        raise refuse(at(field, "field"), f"must be a path starting with {', '.join(roots)} (e.g. {example})")
    ops = [key for key in raw if key != "field"]
    if len(ops) != 1 or ops[0] not in OPERATORS:
        raise refuse(field, f"needs exactly one operator of {', '.join(OPERATORS)}")
    op, value = ops[0], raw[ops[0]]
    if op in ("in", "not_in") and not isinstance(value, list):
        raise refuse(at(field, op), "must be a list")
    if op == "exists" and not isinstance(value, bool):
        raise refuse(at(field, op), "must be true or false")
    pattern = None
    if op == "matches":
        try:
            pattern = re.compile(str(value))
        except re.error as exc:
            raise refuse(at(field, op), f"not a valid regular expression: {exc}") from None
    return Compare(tuple(path.split(".")), op, tuple(value) if isinstance(value, list) else value, pattern)


def holds(condition: Condition, resolve: Callable[[tuple[str, ...]], Any]) -> bool:
    """Does the condition hold; `resolve` gives a path's value, or MISSING, and is asked only for the paths read."""
    match condition:
        case AllOf(items):
            return all(holds(item, resolve) for item in items)
        case AnyOf(items):
            return any(holds(item, resolve) for item in items)
        case Not(item):
            return not holds(item, resolve)
        case Compare():
            return compare(condition, resolve(condition.path))
    raise AssertionError(condition)


def walk(value: Any, rest: tuple[str, ...]) -> Any:
    """Follow `rest` down nested mappings from `value`; MISSING where a step is absent."""
    for part in rest:
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        else:
            return MISSING
    return value


def compare(condition: Compare, value: Any) -> bool:
    """A missing field matches only `ne`, `not_in` and `exists: false`; a type mismatch never matches."""
    op, expected = condition.op, condition.value
    if op == "exists":
        return (value is not MISSING) == bool(expected)
    if value is MISSING:
        return op in ("ne", "not_in")
    try:
        match op:
            case "eq":
                return bool(value == expected)
            case "ne":
                return bool(value != expected)
            case "gt":
                return bool(value > expected)
            case "gte":
                return bool(value >= expected)
            case "lt":
                return bool(value < expected)
            case "lte":
                return bool(value <= expected)
            case "in":
                return value in expected
            case "not_in":
                return value not in expected
            case "contains":
                return isinstance(value, str | list | tuple | Mapping) and expected in value
            case "matches":
                pattern = condition.pattern or re.compile(str(expected))
                return isinstance(value, str) and pattern.search(value) is not None
    except TypeError:
        return False  # e.g. "abc" > 3: a mismatch of types never matches
    raise AssertionError(op)
