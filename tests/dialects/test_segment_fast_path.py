"""The Segment dialect's fast path maps a well-formed call exactly as the field-by-field check does, and no other."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.envelope import Envelope
from app.core.fields import timestamp
from app.dialects import segment
from app.errors import ValidationError
from tests.dialects.test_segment import REQUEST, SEED_EVENT, SENT_AT

SENT = timestamp(SENT_AT, "sentAt", require_offset=False)
# Values of every JSON type and the edges of the checks: each is tried in every field.
VALUES: list[Any] = [
    None,
    "",
    " ",
    "x",
    "x" * 256,
    "x" * 257,
    0,
    7,
    1.5,
    True,
    [],
    ["a"],
    {},
    {"a": 1},
    "x" * 40_000,
    *segment.CALL_TYPES,
    "screen",
    "2025-01-15T10:30:00Z",
    "2025-01-15T10:30:00",
    "2026-01-15T10:30:00Z",
    "0001-01-01T00:00:00Z",
    "nonsense-time",
]
FIELDS = [*sorted(segment.EVENT_FIELDS), "nonsense"]


def variants() -> list[dict[str, Any]]:
    """The seed call with one field set to each value or dropped, then the same for each call type."""
    full = {**SEED_EVENT, "traits": {"plan": "pro"}, "name": "Home", "category": "Docs", "integrations": {"All": True}}
    bases = [full, *({**full, "type": kind, "groupId": "g1", "previousId": "p1"} for kind in segment.CALL_TYPES)]
    found = [SEED_EVENT]
    for base in bases:
        found.append(base)
        for field in FIELDS:
            found.append({name: value for name, value in base.items() if name != field})
            found.extend({**base, field: value} for value in VALUES)
    return found


def checked(raw: Any) -> Envelope | None:
    try:
        return segment.checked_event(raw, 0, SENT, REQUEST)
    except ValidationError:
        return None


@pytest.mark.parametrize("raw", variants())
def test_the_fast_path_agrees_with_the_full_check(raw: dict[str, Any]) -> None:
    fast = segment.well_formed(raw, SENT, REQUEST)
    if fast is not None:  # what it accepts, the full check accepts and maps the same, key order and all
        full = checked(raw)
        assert full is not None
        assert fast == full
        assert (list(fast.data), list(fast.metadata)) == (list(full.data), list(full.metadata))


def test_the_fast_path_takes_well_formed_calls() -> None:
    taken = [raw for raw in variants() if segment.well_formed(raw, SENT, REQUEST) is not None]
    assert SEED_EVENT in taken
    assert len(taken) > 300
