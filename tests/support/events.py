"""Test events built from a valid one: change a field, or drop it with `...`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def edited(base: Mapping[str, Any], **changes: Any) -> dict[str, Any]:
    """A copy of `base` with each change applied; a value of `...` removes the field."""
    event = dict(base)
    for key, value in changes.items():
        if value is ...:
            del event[key]
        else:
            event[key] = value
    return event
