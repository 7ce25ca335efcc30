"""JSON bodies parsed once, with the limits that keep every later step exact: nesting depth and integer range."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from app.errors import MalformedBody, ValidationError

# Deep enough for any real event; far below what the encoders downstream take (orjson writes at
# most 254 levels, and an event's data sits a few levels deep inside the records Sluice writes).
MAX_DEPTH = 64
# orjson reads integers from -2^63 to 2^64 - 1 exactly and any other as a float, which would
# change the number; such integers are refused instead.
SMALLEST, LARGEST = -(2**63), 2**64 - 1


def loads(raw: bytes | str, field: str = "body", shape: Callable[[Any, int], int] | None = None) -> Any:
    """The JSON value of `raw`, refused with the field named if it is not JSON, too deep or inexact.

    `shape` (the compiled core's `json_shape`) may stand in for the walk: when it answers 0, the value
    is within MAX_DEPTH and holds no suspect float; any other answer walks the value here again, to
    refuse it with the field named.
    """
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedBody(f"{field} is not valid JSON: {exc}", field=field) from None
    if shape is not None and shape(value, MAX_DEPTH) == 0:
        return value
    if _needs_exact_integers(value, field):
        _refuse_inexact_integers(json.loads(raw), field)
    return value


def _needs_exact_integers(value: Any, field: str) -> bool:
    """Check the depth; True if a float there might have been an integer out of orjson's range.

    The walk keeps no field names: making one per member was most of its cost on every request.
    Only a body found too deep is walked again, with names, to say where. It goes a level at a
    time, so a member costs no tuple of (item, depth).
    """
    suspect = _suspect(value)
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            raise _too_deep(_deepest(value, field))
        below: list[Any] = []
        for item in level:
            members = item.values() if type(item) is dict else item
            # The members' types, gathered in C: most objects of an event hold only strings and
            # integers, and are then done with without a step of Python a member.
            if _WALKED.isdisjoint(map(type, members)):
                continue
            for child in members:
                kind = type(child)
                if kind is dict or kind is list:
                    below.append(child)
                elif kind is float and not suspect:
                    suspect = _suspect(child)
        level = below
        depth += 1
    return suspect


# What the walk looks into: containers, and floats that may stand for integers out of range.
_WALKED = frozenset({dict, list, float})


def _suspect(value: Any) -> bool:
    # Rounded to a float, -2^63 - 1 is -2^63: the bounds themselves are suspect too.
    return type(value) is float and value.is_integer() and not SMALLEST < value < LARGEST


def _deepest(value: Any, field: str) -> str:
    """The field name of the first container past MAX_DEPTH (one is known to be there)."""
    stack: list[tuple[Any, int, str]] = [(value, 1, "")]
    while stack:
        item, depth, path = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_DEPTH:
            return path or field
        if isinstance(item, dict):
            stack.extend((child, depth + 1, _member(path, key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, depth + 1, f"{path}[{n}]") for n, child in enumerate(item))
    raise AssertionError("no container past the depth limit")


def _refuse_inexact_integers(value: Any, field: str) -> None:
    """`value` as the standard library reads it (integers exact): refuse the first out of range."""
    stack: list[tuple[Any, str]] = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            stack.extend((child, _member(path, key)) for key, child in item.items())
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{n}]") for n, child in enumerate(item))
        elif isinstance(item, int) and not isinstance(item, bool) and not SMALLEST <= item <= LARGEST:
            raise ValidationError(
                f"integer {item} is outside -2^63..2^64-1 and would not be kept exactly; send it as a string",
                field=path or field,
                code="validation.integer_range",
            )


def _member(path: str, key: str) -> str:
    """The field name of `key` inside `path`, as errors name fields: `data.items[2].price`."""
    return f"{path}.{key}" if path else key


def _too_deep(path: str) -> ValidationError:
    return ValidationError(
        f"nests more than {MAX_DEPTH} levels of objects and arrays", field=path, code="validation.too_deep"
    )
