from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from app.catalog import Catalog
from app.errors import NotFound, ValidationError
from app.simulation import simulate

CATALOG = Catalog.load(Path(__file__).resolve().parents[1] / "topics")
NOW = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def test_runs_events_through_the_topics_rules_in_order() -> None:
    result = simulate(
        {
            "topic": "gamification",
            "events": [
                {"type": "lesson_completed"},
                {"type": "quiz_passed", "data": {"score": 0.95}, "occurred_at": "2026-11-01T10:00:00Z"},
            ],
        },
        CATALOG,
        NOW,
    )
    assert result["rules_version"] == CATALOG["gamification"].rules_version
    first, second = result["effects"]
    assert first["answer"]["badges_awarded"] == ["first_lesson"]
    assert second["answer"] == {
        "coins": 5,
        "badges_awarded": [],
        "badges_ready": ["quiz_master"],
        "tokens": [{"token": "hint", "amount": 1}],
        "evolution_ready": False,
        "streak_milestones": [],
    }
    assert result["state"]["points"] == {"coins": 15, "xp": 40}


def test_starts_from_a_given_state() -> None:
    state = simulate({"topic": "orders", "events": [{"type": "orders"}]}, CATALOG, NOW)["state"]
    again = simulate({"topic": "orders", "state": state, "events": [{"type": "orders"}]}, CATALOG, NOW)
    assert again["state"]["counters"] == {"orders": 2}
    assert again["effects"][0]["totals"]["coins"] == 20


@pytest.mark.parametrize(
    ("body", "field", "code"),
    [
        ({"events": [{"type": "x"}]}, "topic", "validation.required"),
        ({"topic": "orders"}, "events", "validation.type"),
        ({"topic": "orders", "events": []}, "events", "validation.type"),
        ({"topic": "orders", "events": [{}]}, "events[0].type", "validation.required"),
        ({"topic": "orders", "events": [{"type": "x", "when": 1}]}, "events[0].when", "validation.unknown"),
        (
            {"topic": "orders", "events": [{"type": "x", "occurred_at": "soon"}]},
            "events[0].occurred_at",
            "validation.format",
        ),
        ({"topic": "orders", "state": [], "events": [{"type": "x"}]}, "state", "validation.type"),
        ({"topic": "orders", "state": {"points": 3}, "events": [{"type": "x"}]}, "state", "validation.type"),
        ({"topic": "orders", "events": [{"type": "x"}], "extra": 1}, "extra", "validation.unknown"),
    ],
)
def test_refusals_name_field_and_code(body: dict[str, Any], field: str, code: str) -> None:
    with pytest.raises(ValidationError) as caught:
        simulate(body, CATALOG, NOW)
    assert (caught.value.field, caught.value.code) == (field, code)


def test_unknown_topic_is_not_found() -> None:
    with pytest.raises(NotFound):
        simulate({"topic": "nope", "events": [{"type": "x"}]}, CATALOG, NOW)
