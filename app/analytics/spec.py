"""A windowed table as declared under `tables:` in topics/<slug>.yaml, validated at load."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from app.errors import ConfigError

TABLE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")
KAFKA_NAME = re.compile(r"[A-Za-z0-9._-]{1,200}")
DURATION = re.compile(r"(\d+)(ms|s|m|h|d)?")
UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
# Aggregations over a numeric `data` field; `count` and `distinct_users` need none.
FIELD_AGGREGATIONS = ("sum", "min", "max", "mean")
AGGREGATIONS = ("count", "distinct_users", *FIELD_AGGREGATIONS)
# Group keys read the envelope: its type, its user, or a `data` field (data.a.b).
GROUP_FIELD = re.compile(r"type|user_id|data(\.[A-Za-z0-9_-]+)+")
MAX_WINDOWS_PER_EVENT = 100
KNOWN_KEYS = {"name", "window", "aggregate", "group_by", "grace", "retention", "late_topic", "description"}


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Tumbling when step == size, hopping otherwise; in milliseconds of event time."""

    size_ms: int
    step_ms: int

    @property
    def kind(self) -> str:
        return "tumbling" if self.step_ms == self.size_ms else "hopping"


@dataclass(frozen=True, slots=True)
class TableSpec:
    name: str
    topic: str  # the slug of the topic file that declares it
    window: WindowSpec
    aggregation: str  # one of AGGREGATIONS
    field: str | None  # data.x for sum/min/max/mean
    group_by: tuple[str, ...]
    grace_ms: int
    retention_ms: int
    late_topic: str | None = None  # Kafka topic (before the namespace) that receives late events
    description: str = ""

    def describe(self) -> dict[str, Any]:
        """The definition as GET /tables shows it."""
        return {
            "name": self.name,
            "topic": self.topic,
            "description": self.description,
            "window": {"kind": self.window.kind, "size_ms": self.window.size_ms, "step_ms": self.window.step_ms},
            "aggregate": self.aggregation if self.field is None else {self.aggregation: self.field},
            "group_by": list(self.group_by),
            "grace_ms": self.grace_ms,
            "retention_ms": self.retention_ms,
            "late_topic": self.late_topic,
        }


def parse_duration(raw: Any, where: str, field: str) -> int:
    """`90` (seconds), `"250ms"`, `"90s"`, `"15m"`, `"1h"`, `"7d"` -> milliseconds."""
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ConfigError(f"{where}.{field}: must be a duration such as 90s, 15m, 1h or 7d", field=field)
    if isinstance(raw, int):
        if raw < 0:
            raise ConfigError(f"{where}.{field}: must not be negative", field=field)
        return raw * 1000
    match = DURATION.fullmatch(raw.strip())
    if match is None:
        raise ConfigError(f"{where}.{field}: {raw!r} is not a duration such as 90s, 15m, 1h or 7d", field=field)
    return int(match.group(1)) * UNIT_MS[match.group(2) or "s"]


def parse_tables(raw: Any, *, slug: str, source: str) -> tuple[TableSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(f"{source}: 'tables' must be a list of windowed tables", field="tables")
    tables = tuple(_parse_table(item, index, slug=slug, source=source) for index, item in enumerate(raw))
    seen: set[str] = set()
    for table in tables:
        if table.name in seen:
            raise ConfigError(f"{source}: table {table.name!r} is declared twice", field="tables.name")
        seen.add(table.name)
    return tables


def _parse_table(raw: Any, index: int, *, slug: str, source: str) -> TableSpec:
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: tables[{index}] must be a mapping", field="tables")
    name = raw.get("name")
    if not isinstance(name, str) or not TABLE_NAME.fullmatch(name):
        raise ConfigError(
            f"{source}: tables[{index}].name: must be lower-case snake_case, at most 63 characters", field="name"
        )
    where = f"{source}: table {name!r}"
    unknown = sorted(set(raw) - KNOWN_KEYS)
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {unknown[0]!r}; known: {', '.join(sorted(KNOWN_KEYS))}", field=unknown[0]
        )
    window = _parse_window(raw.get("window"), where)
    aggregation, field = _parse_aggregate(raw.get("aggregate"), where)
    group_by = raw.get("group_by", [])
    if isinstance(group_by, str):
        group_by = [group_by]
    if not isinstance(group_by, list) or not all(isinstance(g, str) and GROUP_FIELD.fullmatch(g) for g in group_by):
        raise ConfigError(f"{where}: group_by: must list type, user_id or data.<field> names", field="group_by")
    if len(set(group_by)) != len(group_by):
        raise ConfigError(f"{where}: group_by: names a field twice", field="group_by")
    grace_ms = parse_duration(raw.get("grace", 0), where, "grace")
    retention_ms = parse_duration(raw.get("retention", "7d"), where, "retention")
    # A window is swept only once no event can still land in it: retention covers the window and its grace.
    if retention_ms < window.size_ms + grace_ms:
        raise ConfigError(f"{where}: retention: must be at least the window size plus the grace", field="retention")
    late_topic = raw.get("late_topic")
    if late_topic is not None and (not isinstance(late_topic, str) or not KAFKA_NAME.fullmatch(late_topic)):
        raise ConfigError(f"{where}: late_topic: must be a Kafka topic name", field="late_topic")
    description = raw.get("description", "")
    if not isinstance(description, str):
        raise ConfigError(f"{where}: description: must be a string", field="description")
    return TableSpec(
        name=name,
        topic=slug,
        window=window,
        aggregation=aggregation,
        field=field,
        group_by=tuple(group_by),
        grace_ms=grace_ms,
        retention_ms=retention_ms,
        late_topic=late_topic,
        description=description,
    )


def _parse_window(raw: Any, where: str) -> WindowSpec:
    """`{tumbling: 1h}` or `{hopping: 1h, step: 15m}`."""
    if not isinstance(raw, dict) or len({"tumbling", "hopping"} & set(raw)) != 1:
        raise ConfigError(
            f"{where}: window: must be {{tumbling: SIZE}} or {{hopping: SIZE, step: STEP}}", field="window"
        )
    extra = sorted(set(raw) - {"tumbling", "hopping", "step"})
    if extra:
        raise ConfigError(f"{where}: window: unknown key {extra[0]!r}", field="window")
    if "tumbling" in raw:
        if "step" in raw:
            raise ConfigError(f"{where}: window.step: only hopping windows have a step", field="window.step")
        size = parse_duration(raw["tumbling"], where, "window.tumbling")
        step = size
    else:
        size = parse_duration(raw["hopping"], where, "window.hopping")
        if "step" not in raw:
            raise ConfigError(f"{where}: window.step: a hopping window needs a step", field="window.step")
        step = parse_duration(raw["step"], where, "window.step")
        if not 0 < step <= size:
            raise ConfigError(f"{where}: window.step: must be above 0 and at most the size", field="window.step")
        # Each event updates size/step windows: bound the work (and the rows) one event makes.
        if size > MAX_WINDOWS_PER_EVENT * step:
            raise ConfigError(
                f"{where}: window.step: at least size/{MAX_WINDOWS_PER_EVENT} (an event is in size/step windows)",
                field="window.step",
            )
    if size <= 0:
        raise ConfigError(f"{where}: window: the size must be above 0", field="window")
    return WindowSpec(size_ms=size, step_ms=step)


def _parse_aggregate(raw: Any, where: str) -> tuple[str, str | None]:
    """`count`, `distinct_users`, or `{sum|min|max|mean: data.<field>}`."""
    if raw in ("count", "distinct_users"):
        return raw, None
    if isinstance(raw, dict) and len(raw) == 1:
        ((kind, field),) = raw.items()
        if kind in FIELD_AGGREGATIONS:
            if not isinstance(field, str) or not field.startswith("data.") or not GROUP_FIELD.fullmatch(field):
                raise ConfigError(
                    f"{where}: aggregate.{kind}: must name a data field (data.x)", field=f"aggregate.{kind}"
                )
            return kind, field
    raise ConfigError(
        f"{where}: aggregate: must be count, distinct_users or {{sum|min|max|mean: data.<field>}}", field="aggregate"
    )
