"""Golden files: the shipped topics' rules, events in, effects out (tests/golden/<slug>.yaml)."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.rules import Fact, UserState, apply
from app.topics import Catalog

REPO = Path(__file__).resolve().parents[2]
CATALOG = Catalog.load(REPO / "topics")
GOLDEN = sorted((REPO / "tests" / "golden").glob("*.yaml"))
AT = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden(path: Path) -> None:
    golden: dict[str, Any] = yaml.safe_load(path.read_text())
    spec = CATALOG[golden["topic"]]
    states: dict[str, UserState] = {}
    for case in golden["cases"]:
        event = case["event"]
        user = event["user"]
        states[user], effect = apply(
            states.get(user, UserState()), Fact(event["type"], AT, event.get("data", {})), spec.rules
        )
        assert effect.to_dict() == case["effect"], case


def test_every_shipped_topic_with_rules_has_a_golden_file() -> None:
    covered = {yaml.safe_load(path.read_text())["topic"] for path in GOLDEN}
    assert {slug for slug, spec in CATALOG.items() if spec.rules} <= covered
