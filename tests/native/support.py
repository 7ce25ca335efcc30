"""Runs events through the Python ledger and the compiled core side by side, and says where they differ."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from app import ledger, native
from app.avro.schemas import SchemaSet
from app.catalog import TopicSpec
from app.core.envelope import Envelope
from app.core.instants import epoch_ms
from app.errors import SchemaError
from app.worker.recent_users import RecentUsers

REPO = Path(__file__).resolve().parents[2]
SCHEMAS = SchemaSet.load(REPO / "schemas")
EVENT, EFFECT = SCHEMAS["event"], SCHEMAS["effect"]


@dataclass
class Twin:
    """The same table and recent-users cache, kept by the Python ledger and by the compiled core."""

    topics: dict[str, TopicSpec]
    program: native.Program
    capacity: int = 3
    table_py: dict[bytes, bytes] = field(default_factory=dict)
    table_native: dict[bytes, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.recent = RecentUsers(self.capacity)
        self.users = native.new_users(self.capacity)
        self.seen: list[native.Stepped | None] = []

    def batch(self, records: list[tuple[bytes, str, int]], *, now: datetime, window_s: int, generation: int) -> None:
        """Apply one batch both ways; assert that every step, entry, user record, cached record and the
        metrics' counts agree."""
        py = ledger.Batch(self.table_py.get, now=now, dedupe_window_s=window_s, known=self.recent.of(generation))
        nb = native.new_batch(
            self.program, self.table_native.get, now=now, dedupe_window_s=window_s, known=self.users.of(generation)
        )
        counts = Counts()
        for value, topic, offset in records:
            stepped = nb.step(value, topic, offset)
            python, fired = self.python_step(py, value, topic, offset)
            assert stepped == python, (value, topic, offset)
            if python is not None:
                counts.add(python, fired)
            self.seen.append(stepped)
        assert nb.tally() == counts.expected()
        assert nb.entries == py.entries
        assert nb.users == py.users
        for table, batch in ((self.table_py, py), (self.table_native, nb)):
            table.update(batch.entries)
            table.update(batch.users)
        self.recent.keep(py.user_records)
        self.users.keep(nb)
        recent = [(key, ledger.dump(user)) for key, user in self.recent.of(generation).items()]
        assert self.users.items() == recent
        assert self.table_native == self.table_py

    def python_step(
        self, py: ledger.Batch, value: bytes, topic: str, offset: int
    ) -> tuple[native.Stepped | None, tuple[str, ...]]:
        """What the worker's Python path makes of one record, in the compiled core's terms, and the ids of the
        rules it fired."""
        try:
            envelope = Envelope.decode(EVENT, value)
            spec = self.topics[envelope.topic]
        except (SchemaError, KeyError):
            return None, ()
        step = py.step(envelope, source_topic=topic, offset=offset, rules=spec.rules, rules_version=spec.rules_version)
        fired = tuple(step.effect["rules_fired"]) if step.outcome is ledger.Outcome.APPLIED and step.effect else ()
        stepped = (
            step.outcome,
            None if step.effect is None else EFFECT.encode(step.effect),
            None if step.reply is None else EFFECT.encode(step.reply),
            envelope.key,
            envelope.topic,
            epoch_ms(envelope.received_at),
        )
        return stepped, fired


@dataclass
class Counts:
    """The metrics' counts of a batch, as the worker's Python path adds them up from its outcomes."""

    applied: int = 0
    duplicates: int = 0
    fired: Counter[tuple[str, str]] = field(default_factory=Counter)
    received_ms: list[int] = field(default_factory=list)

    def add(self, stepped: native.Stepped, fired: tuple[str, ...]) -> None:
        outcome, _, _, _, slug, received_ms = stepped
        if outcome is ledger.Outcome.APPLIED:
            self.applied += 1
            self.fired.update((slug, rule) for rule in fired)
            self.received_ms.append(received_ms)
        elif outcome is ledger.Outcome.REDELIVERED:
            self.received_ms.append(received_ms)
        else:
            self.duplicates += 1

    def expected(self) -> native.Counts:
        return self.applied, self.duplicates, dict(self.fired), self.received_ms
