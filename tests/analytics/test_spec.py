"""Windowed table specs in topic files: parsed into typed specs, refused with file, table and field named."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.catalog import Catalog, load_topic
from app.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]

GOOD = """
tables:
  - name: revenue
    window: {hopping: 1h, step: 15m}
    aggregate: {sum: data.amount}
    group_by: [type, data.sku]
    grace: 5m
    retention: 2d
    late_topic: late.revenue
"""


def test_a_table_spec_is_typed(tmp_path: Path) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(GOOD)
    (table,) = load_topic(path).tables
    assert table.window.size_ms == 3_600_000 and table.window.step_ms == 900_000 and table.window.kind == "hopping"
    assert (table.aggregation, table.field, table.group_by) == ("sum", "data.amount", ("type", "data.sku"))
    assert (table.grace_ms, table.retention_ms, table.late_topic) == (300_000, 172_800_000, "late.revenue")


def test_the_shipped_example_table_loads() -> None:
    table = Catalog.load(REPO / "topics").tables()["events_per_platform"]
    assert table.topic == "analytics" and table.window.kind == "tumbling"


@pytest.mark.parametrize(
    ("table", "message", "field"),
    [
        ("{name: x, window: {tumbling: 1h}, aggregate: median}", "table 'x': aggregate", "aggregate"),
        ("{name: x, window: {hopping: 1h}, aggregate: count}", "table 'x': window.step", "window.step"),
        ("{name: x, window: {hopping: 1h, step: 2h}, aggregate: count}", "window.step", "window.step"),
        ("{name: x, window: {tumbling: soon}, aggregate: count}", "window.tumbling", "window.tumbling"),
        ("{name: x, window: {tumbling: 1h}, aggregate: {sum: amount}}", "aggregate.sum", "aggregate.sum"),
        ("{name: x, window: {tumbling: 1h}, aggregate: count, group_by: [sku]}", "group_by", "group_by"),
        ("{name: x, window: {tumbling: 1h}, aggregate: count, retention: 30m}", "retention", "retention"),
        ("{name: x, window: {tumbling: 1h}, aggregate: count, colour: red}", "unknown key 'colour'", "colour"),
        ("{name: X-1, window: {tumbling: 1h}, aggregate: count}", "tables[0].name", "name"),
    ],
)
def test_a_bad_table_names_file_table_and_field(tmp_path: Path, table: str, message: str, field: str) -> None:
    path = tmp_path / "shop.yaml"
    path.write_text(f"tables:\n  - {table}\n")
    with pytest.raises(ConfigError) as caught:
        load_topic(path)
    assert str(path) in caught.value.message and message in caught.value.message
    assert caught.value.field == field


def test_table_names_are_unique_across_topics(tmp_path: Path) -> None:
    for slug in ("a", "b"):
        (tmp_path / f"{slug}.yaml").write_text("tables:\n  - {name: t, window: {tumbling: 1h}, aggregate: count}\n")
    with pytest.raises(ConfigError, match="both declare table 't'"):
        Catalog.load(tmp_path)
