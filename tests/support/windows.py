"""A naive reference for windowed tables: what each window should hold, computed the slow, obvious way."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from app.analytics.spec import TableSpec
from app.core.envelope import Envelope
from app.core.instants import EPOCH

Windows = dict[tuple[tuple[str, ...], int], list[float]]  # (group key, window start) -> values counted


def event(tenant: str, user: str, at: datetime, kind: str, **data: Any) -> Envelope:
    """An event of topic `shop` as the pub/sub dialect would make it."""
    return Envelope(
        id=f"{user}-{at.timestamp()}-{kind}",
        tenant=tenant,
        topic="shop",
        type=kind,
        user_id=user,
        occurred_at=at,
        received_at=at,
        dialect="pubsub",
        data=data,
    )


def reference(events: Iterable[Envelope], spec: TableSpec, now_ms: int | None = None) -> tuple[Windows, list[Envelope]]:
    """Events of ONE partition in order -> the values each window counted, and the events late for some window."""
    windows: Windows = {}
    stream_time = -(10**18)
    late: list[Envelope] = []
    size, step = spec.window.size_ms, spec.window.step_ms
    for event in events:
        t = int((event.occurred_at - EPOCH).total_seconds() * 1000)
        stream_time = max(stream_time, t)
        group = tuple(str(event.type if path == "type" else event.data.get(path[5:])) for path in spec.group_by)
        value = event.data.get(spec.field[5:]) if spec.field else 0
        if value is None:
            continue
        was_late = False
        for start in sorted(t - t % step - k * step for k in range(size // step + 2)):
            if not start <= t < start + size:
                continue
            expired = now_ms is not None and start + size + spec.retention_ms <= now_ms
            if stream_time >= start + size + spec.grace_ms or expired:
                was_late = True
                continue
            windows.setdefault((group, start), []).append(value)
        if was_late:
            late.append(event)
    return windows, late


def merged(*parts: Windows) -> Windows:
    """Partitions' windows together (a key's windows may come from several partitions)."""
    out: Windows = {}
    for part in parts:
        for key, values in part.items():
            out.setdefault(key, []).extend(values)
    return out
