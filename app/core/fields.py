"""Field checks shared by the dialects; each failure names the field and the reason."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from app.errors import ValidationError

MAX_ID_LENGTH = 256


def require_object(body: Any, field: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ValidationError(f"must be a JSON object, got {json_type(body)}", field=field, code="validation.type")
    return body


def reject_unknown(body: Mapping[str, Any], allowed: frozenset[str], path: str = "") -> None:
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise ValidationError(
            f"unknown field; allowed: {', '.join(sorted(allowed))}", field=path + unknown[0], code="validation.unknown"
        )


def batch(body: Any, field: str, most: int, allowed: frozenset[str]) -> list[Any]:
    """The events of a batch request: `body[field]`, an array of 1 to `most` items; other keys closed."""
    body = require_object(body, "body")
    reject_unknown(body, allowed)
    if field not in body:
        raise ValidationError("is required", field=field, code="validation.required")
    items = body[field]
    if not isinstance(items, list):
        raise ValidationError(f"must be an array, got {json_type(items)}", field=field, code="validation.type")
    if not items:
        raise ValidationError("must hold at least 1 event", field=field, code="validation.min_items")
    if len(items) > most:
        raise ValidationError(
            f"must hold at most {most} events, got {len(items)}", field=field, code="validation.max_items"
        )
    return items


def optional_object(body: Mapping[str, Any], field: str, *, path: str = "") -> dict[str, Any]:
    value = body.get(field)
    if value is None:
        return {}
    return require_object(value, path + field)


def optional_string(body: Mapping[str, Any], field: str, *, path: str = "") -> str | None:
    value = body.get(field)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, got {json_type(value)}", field=path + field, code="validation.type")
    return value


def text(value: Any, field: str, max_length: int | None = None) -> str:
    """A required string: present, not blank, and no longer than `max_length` when one is given."""
    if not isinstance(value, str):
        raise ValidationError(f"must be a string, got {json_type(value)}", field=field, code="validation.type")
    if not value.strip():
        raise ValidationError("must not be empty", field=field, code="validation.required")
    if max_length is not None and len(value) > max_length:
        raise ValidationError(f"must be at most {max_length} characters", field=field, code="validation.length")
    return value


def identifier(value: Any, field: str) -> str:
    """An id-like string: a user id, an event id."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValidationError(f"must be a string, got {json_type(value)}", field=field, code="validation.type")
    text = str(value)
    if not text.strip():
        raise ValidationError("must not be empty", field=field, code="validation.required")
    if len(text) > MAX_ID_LENGTH:
        raise ValidationError(f"must be at most {MAX_ID_LENGTH} characters", field=field, code="validation.length")
    return text


def timestamp(value: Any, field: str, *, require_offset: bool) -> datetime:
    """An RFC 3339 / ISO 8601 date-time, returned in UTC. Without an offset it is UTC, if allowed."""
    if not isinstance(value, str):
        raise ValidationError(
            f"must be an RFC 3339 date-time string, got {json_type(value)}", field=field, code="validation.type"
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ValidationError(
            f"must be an RFC 3339 date-time such as 2026-04-22T10:30:00Z, got {value!r}",
            field=field,
            code="validation.format",
        ) from None
    if parsed.tzinfo is None:
        if require_offset:
            raise ValidationError("must carry a UTC offset (Z or +hh:mm)", field=field, code="validation.format")
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def is_count(text: str, most_digits: int = 18) -> bool:
    """Is `text` a plain non-negative integer that int() reads and a 64-bit value holds?

    str.isdigit() alone is not enough: it holds for digits int() refuses, such as '²', and for
    numbers too long for int() to read at all.
    """
    return text.isascii() and text.isdigit() and len(text) <= most_digits
