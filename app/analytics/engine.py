"""Apply a run of one partition's events to its window rows: pure, given a way to read the rows.

Crash safety, with faust's table writes not atomic with offset commits: every row carries
the source offset that last changed it, and the partition's progress record (stream time,
late counts, last offset) is written after the rows of the batch, in the same changelog
partition. A redelivered event at or below the progress offset is skipped whole; one above
it finds the rows it already changed (row offset >= its own) and skips those only. The stream
time restarts from the progress record, so lateness is decided again exactly as the first time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.analytics.aggregate import Aggregate, numeric
from app.analytics.rows import field_value, group_of, meta_key, row_key
from app.analytics.spec import TableSpec
from app.analytics.windows import is_closed, is_expired, window_starts
from app.core.envelope import Envelope
from app.core.instants import epoch_ms

NO_TIME = -(1 << 62)


@dataclass(slots=True)
class Progress:
    """Where a partition of a source topic is: last applied offset, stream time, late events per tenant and table."""

    offset: int = -1
    stream_time_ms: int = NO_TIME
    late: dict[str, dict[str, int]] = field(default_factory=dict)

    def encode(self) -> bytes:
        return orjson.dumps({"o": self.offset, "w": self.stream_time_ms, "late": self.late})

    @classmethod
    def decode(cls, raw: bytes | None) -> Progress:
        if raw is None:
            return cls()
        body = orjson.loads(raw)
        return cls(offset=body["o"], stream_time_ms=body["w"], late=body["late"])


@dataclass(frozen=True, slots=True)
class Late:
    """An event some table refused as late: for the table's late topic."""

    table: TableSpec
    raw: bytes
    key: bytes


@dataclass(slots=True)
class Batch:
    """The rows one run of events changes, kept in memory and written once (rows first, progress last)."""

    get: Callable[[bytes], bytes | None]
    source_topic: str
    now_ms: int
    rows: dict[bytes, tuple[int, Aggregate]] = field(default_factory=dict)
    late: list[Late] = field(default_factory=list)
    progress: Progress = field(init=False)

    def __post_init__(self) -> None:
        self.progress = Progress.decode(self.get(meta_key(self.source_topic)))

    def apply(self, envelope: Envelope, offset: int, tables: Sequence[TableSpec], raw: bytes = b"") -> None:
        progress = self.progress
        if offset <= progress.offset:
            return  # applied whole before a crash or a rebalance
        t_ms = _ms(envelope)
        progress.stream_time_ms = max(progress.stream_time_ms, t_ms)
        for table in tables:
            self._apply_table(table, envelope, t_ms, offset, raw)
        progress.offset = offset

    def _apply_table(self, table: TableSpec, envelope: Envelope, t_ms: int, offset: int, raw: bytes) -> None:
        group = group_of(envelope, table.group_by)
        if group is None:
            return
        value = None
        if table.field is not None:
            value = numeric(field_value(envelope, table.field))
            if value is None:
                return
        user = envelope.user_id if table.aggregation == "distinct_users" else None
        late = False
        for start in window_starts(t_ms, table.window):
            if is_closed(start, table, self.progress.stream_time_ms) or is_expired(start, table, self.now_ms):
                late = True
                continue
            key = row_key(envelope.tenant, table, group, start)
            last, aggregate = self._row(key)
            if last >= offset:
                continue  # this row has the event already
            aggregate.add(value, user)
            self.rows[key] = (offset, aggregate)
        if late:
            per_tenant = self.progress.late.setdefault(envelope.tenant, {})
            per_tenant[table.name] = per_tenant.get(table.name, 0) + 1
            if table.late_topic is not None:
                self.late.append(Late(table, raw, envelope.key))

    def _row(self, key: bytes) -> tuple[int, Aggregate]:
        if key in self.rows:
            return self.rows[key]
        return decode_row(self.get(key))

    def writes(self) -> list[tuple[bytes, bytes]]:
        """Rows first, the progress record last: see the module's note."""
        out = [(key, encode_row(offset, aggregate)) for key, (offset, aggregate) in self.rows.items()]
        out.append((meta_key(self.source_topic), self.progress.encode()))
        return out


def encode_row(offset: int, aggregate: Aggregate) -> bytes:
    return orjson.dumps({"o": offset, "a": aggregate.to_json()})


def decode_row(raw: bytes | None) -> tuple[int, Aggregate]:
    if raw is None:
        return -1, Aggregate()
    body: dict[str, Any] = orjson.loads(raw)
    return body["o"], Aggregate.from_json(body["a"])


def _ms(envelope: Envelope) -> int:
    return epoch_ms(envelope.occurred_at)
