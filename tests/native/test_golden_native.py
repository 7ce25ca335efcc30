"""The golden files (tests/golden) through the compiled core: the same effects as the Python engine's."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from app import native
from app.core.envelope import Envelope
from tests.native.support import EFFECT, EVENT, SCHEMAS
from tests.rules.test_golden import CATALOG, DEFAULT_TIME, GOLDEN, non_empty

pytestmark = pytest.mark.skipif(not native.AVAILABLE, reason="the compiled core is not built")
NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize("path", GOLDEN, ids=lambda p: p.stem)
def test_golden(path: Path) -> None:
    golden: dict[str, Any] = yaml.safe_load(path.read_text())
    program = native.compile_rulebook(CATALOG, SCHEMAS)
    assert program is not None
    table: dict[bytes, bytes] = {}
    for number, case in enumerate(golden["cases"]):
        event = case["event"]
        at = event.get("at", DEFAULT_TIME)
        envelope = Envelope(
            id=f"evt_{number}",
            tenant="acme",
            topic=golden["topic"],
            type=event["type"],
            user_id=event["user"],
            occurred_at=at if isinstance(at, datetime) else datetime.fromisoformat(at),
            received_at=NOW,
            dialect="pubsub",
            data=event.get("data", {}),
        )
        batch = native.new_batch(program, table.get, now=NOW, dedupe_window_s=3600)
        stepped = batch.step(envelope.encode(EVENT), "events.golden", number)
        assert stepped is not None
        table.update(batch.entries)
        table.update(batch.users)
        record = EFFECT.decode(stepped[1] or b"")
        effect = {key: record[key] for key in ("rules_fired", "changes", "totals", "debug_reason")}
        assert non_empty(effect) == non_empty(case["effect"]), f"case {number}: {event}"
