"""The analytics dialect's fast path maps a well-formed event exactly as the full check does, and no other."""

from __future__ import annotations

from typing import Any

import pytest

from app.core.envelope import Envelope
from app.dialects import product_analytics
from app.errors import InvalidFields
from tests.dialects.test_product_analytics import REQUEST, SEED_EVENT, good

# Values of every JSON type and the edges of the checks: each is tried in every field.
VALUES: list[Any] = [
    None,
    "",
    " ",
    "\u2003",
    "x",
    "x" * 256,
    "x" * 257,
    0,
    7,
    -1,
    1.5,
    True,
    False,
    [],
    ["a"],
    ["a", 1],
    {},
    {"a": 1},
    "mobile",
    "web",
    "unknown",
    "2025-09-17T10:00:00Z",
    "2025-09-17T10:00:00",
    "2025-09-19T10:00:00Z",
    "2025-13-17T10:00:00Z",
]
FIELDS = [*product_analytics.FIELDS, "nonsense"]


def variants() -> list[dict[str, Any]]:
    """The seed event with one field set to each value or dropped, and with every optional field."""
    full = good(
        referrer="https://example.com",
        content={"a": 1},
        behavior={},
        performance={},
        location={},
        commerce={},
        interaction={},
        extras={"b": [1]},
        experiments=["x", "y"],
    )
    found = [SEED_EVENT, full]
    for field in FIELDS:
        found.append({name: value for name, value in full.items() if name != field})
        found.extend(good(**{field: value}) for value in VALUES)
    return found


def checked(raw: Any) -> Envelope | None:
    try:
        return product_analytics.checked(raw, REQUEST, where="body")
    except InvalidFields:
        return None


@pytest.mark.parametrize("raw", variants())
def test_the_fast_path_agrees_with_the_full_check(raw: dict[str, Any]) -> None:
    fast = product_analytics.well_formed(raw, REQUEST)
    if fast is not None:  # what it accepts, the full check accepts and maps the same
        assert fast == checked(raw)
        assert list(fast.data) == list(checked(raw).data)  # type: ignore[union-attr]  # the JSON's key order


def test_the_fast_path_takes_well_formed_events() -> None:
    taken = [raw for raw in variants() if product_analytics.well_formed(raw, REQUEST) is not None]
    assert SEED_EVENT in taken
    assert len(taken) > 100


@pytest.mark.parametrize("raw", [None, "event", [SEED_EVENT], good(user_id=7), good(event_time=1)])
def test_what_the_fast_path_leaves_goes_to_the_full_check(raw: Any) -> None:
    assert product_analytics.well_formed(raw, REQUEST) is None
    outcome = checked(raw)
    assert outcome is None or outcome.user_id == "7"
