"""Answers to table queries: partials from every partition merged, ranked and rendered as JSON rows, CSV or text."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from app.analytics.aggregate import Aggregate
from app.analytics.rows import GroupKey
from app.analytics.scan import Partial
from app.analytics.spec import TableSpec
from app.core.instants import from_epoch_ms


def to_wire(partials: Iterable[Partial]) -> list[list[Any]]:
    return [[list(group), start, aggregate.partial()] for group, start, aggregate in partials]


def merge(answers: Iterable[Sequence[Sequence[Any]]]) -> dict[tuple[GroupKey, int], Aggregate]:
    """One aggregate per (group key, window) from every partition's partials."""
    merged: dict[tuple[GroupKey, int], Aggregate] = {}
    for rows in answers:
        for group, start, partial in rows:
            key = (tuple(group), start)
            merged.setdefault(key, Aggregate()).merge(Aggregate.from_json(partial))
    return merged


def windows(table: TableSpec, merged: dict[tuple[GroupKey, int], Aggregate]) -> list[dict[str, Any]]:
    """Rows in group key, then window order."""
    return [_row(table, group, start, merged[group, start]) for group, start in sorted(merged)]


def top(table: TableSpec, merged: dict[tuple[GroupKey, int], Aggregate], n: int) -> list[dict[str, Any]]:
    """The n keys of highest value (ties by key); keys without a value (min of nothing) last."""
    ranked = sorted(merged, key=lambda k: (merged[k].value(table.aggregation) is None, _neg(merged[k], table), k[0]))
    return [_row(table, group, start, merged[group, start]) for group, start in ranked[:n]]


def _neg(aggregate: Aggregate, table: TableSpec) -> float:
    value = aggregate.value(table.aggregation)
    return -value if value is not None else 0.0


def _row(table: TableSpec, group: GroupKey, start: int, aggregate: Aggregate) -> dict[str, Any]:
    return {
        "key": dict(zip(table.group_by, group, strict=True)),
        "window_start": _iso(start),
        "window_end": _iso(start + table.window.size_ms),
        "value": aggregate.value(table.aggregation),
        "events": aggregate.count,
    }


def _iso(ms: int) -> str:
    return from_epoch_ms(ms).isoformat().replace("+00:00", "Z")


def columns(table: TableSpec) -> list[str]:
    return [*table.group_by, "window_start", "window_end", table.aggregation, "events"]


def _flat(table: TableSpec, row: dict[str, Any]) -> list[Any]:
    return [
        *(row["key"][name] for name in table.group_by),
        row["window_start"],
        row["window_end"],
        row["value"],
        row["events"],
    ]


def to_csv(table: TableSpec, rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns(table))
    for row in rows:
        writer.writerow(["" if v is None else v for v in _flat(table, row)])
    return out.getvalue()


def text_table(csv_text: str) -> str:
    """CSV as a table for a terminal: aligned columns, numbers to the right."""
    cells = list(csv.reader(io.StringIO(csv_text)))
    if not cells:
        return ""
    widths = [max(len(line[i]) for line in cells) for i in range(len(cells[0]))]
    lines = []
    for index, line in enumerate(cells):
        parts = [c.rjust(w) if index and _is_number(c) else c.ljust(w) for c, w in zip(line, widths, strict=True)]
        lines.append("  ".join(parts).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    if len(cells) == 1:
        lines.append("(no windows)")
    return "\n".join(lines) + "\n"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
