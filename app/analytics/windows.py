"""Event-time windows: which windows an event falls in, and when a window is closed or expired."""

from __future__ import annotations

from app.analytics.spec import TableSpec, WindowSpec


def window_starts(t_ms: int, window: WindowSpec) -> list[int]:
    """Starts of every window holding the instant t: start <= t < start + size, starts on multiples of the step."""
    last = t_ms - t_ms % window.step_ms
    starts = []
    start = last
    while start > t_ms - window.size_ms:
        starts.append(start)
        start -= window.step_ms
    starts.reverse()
    return starts


def is_closed(start_ms: int, table: TableSpec, stream_time_ms: int) -> bool:
    """A window takes no more events once the partition's stream time has passed its end plus the grace."""
    return stream_time_ms >= start_ms + table.window.size_ms + table.grace_ms


def is_expired(start_ms: int, table: TableSpec, now_ms: int) -> bool:
    """Past its retention (wall clock): the sweep deletes it and no event may recreate it."""
    return start_ms + table.window.size_ms + table.retention_ms <= now_ms
