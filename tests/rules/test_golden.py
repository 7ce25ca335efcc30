"""Golden files: the shipped topics' rules, events in, effects out (tests/golden/<slug>.yaml).

Effects are compared with empty values left out (no coins, no badges...), so a file lists
only what an event changed, and any change it does not list fails the test.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.catalog import Catalog
from app.rules import Fact, UserState, apply

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.load(REPO / "topics")
GOLDEN = sorted((REPO / "tests" / "golden").glob("*.yaml"))
DEFAULT_TIME = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)


def non_empty(value: Any) -> Any:
    if isinstance(value, dict):
        kept = {key: non_empty(item) for key, item in value.items()}
        return {key: item for key, item in kept.items() if item not in ({}, [], 0, False, None)}
    if isinstance(value, list):
        return [non_empty(item) for item in value]
    return value


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden(path: Path) -> None:
    golden: dict[str, Any] = yaml.safe_load(path.read_text())
    spec = CATALOG[golden["topic"]]
    states: dict[str, UserState] = {}
    for number, case in enumerate(golden["cases"]):
        event = case["event"]
        at = event.get("at", DEFAULT_TIME)
        fact = Fact(
            event["type"], at if isinstance(at, datetime) else datetime.fromisoformat(at), event.get("data", {})
        )
        user = event["user"]
        states[user], effect = apply(states.get(user, UserState()), fact, spec.rules)
        assert non_empty(effect.to_dict()) == non_empty(case["effect"]), f"case {number}: {event}"


def test_every_shipped_topic_with_rules_has_a_golden_file() -> None:
    covered = {yaml.safe_load(path.read_text())["topic"] for path in GOLDEN}
    assert {slug for slug, spec in CATALOG.items() if spec.rules} <= covered
