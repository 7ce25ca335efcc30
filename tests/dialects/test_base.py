"""What the dialects share: the envelope made through its slots is the dataclass's own."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from app.core.envelope import Envelope
from app.dialects.base import new_envelope

NOW = datetime(2025, 9, 17, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("sent_at", [None, NOW])
def test_new_envelope_is_the_envelope_of_its_fields(sent_at: datetime | None) -> None:
    made = new_envelope("e1", "dev", "orders", "paid", "u1", NOW, NOW, "usage", {"a": 1}, {"b": 2}, sent_at)
    expected = Envelope(
        id="e1",
        tenant="dev",
        topic="orders",
        type="paid",
        user_id="u1",
        occurred_at=NOW,
        received_at=NOW,
        dialect="usage",
        data={"a": 1},
        metadata={"b": 2},
        sent_at=sent_at,
    )
    assert made == expected
    assert dataclasses.asdict(made) == dataclasses.asdict(expected)  # every slot set
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.id = "e2"  # type: ignore[misc]
