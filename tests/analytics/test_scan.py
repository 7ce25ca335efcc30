"""Range and top reads of a partition's rows in RocksDB, merged across partitions and rendered."""

from __future__ import annotations

from pathlib import Path

from rocksdict import Rdict

from app.analytics.aggregate import Aggregate
from app.analytics.engine import encode_row
from app.analytics.results import merge, text_table, to_csv, to_wire, top, windows
from app.analytics.retention import expired_rows
from app.analytics.rows import parse_row_key, row_key
from app.analytics.scan import window_keys, windows_in, windows_of
from app.analytics.spec import TableSpec, WindowSpec

SPEC = TableSpec("clicks", "web", WindowSpec(1000, 1000), "sum", "data.n", ("type", "data.page"), 0, 10**9)
OTHER = TableSpec("views", "web", WindowSpec(1000, 1000), "sum", "data.n", ("type", "data.page"), 0, 10**9)


def aggregate(*values: float) -> Aggregate:
    out = Aggregate()
    for value in values:
        out.add(value, None)
    return out


def fill(db: Rdict, rows: dict[tuple[str, TableSpec, tuple[str, ...], int], Aggregate]) -> None:
    for (tenant, spec, group, start), value in rows.items():
        db[row_key(tenant, spec, group, start)] = encode_row(0, value)


def test_range_and_top_see_one_tenant_and_table_only(tmp_path: Path) -> None:
    db = Rdict(str(tmp_path / "db"))
    fill(
        db,
        {
            ("acme", SPEC, ("click", "home"), -1000): aggregate(1),
            ("acme", SPEC, ("click", "home"), 0): aggregate(2, 3),
            ("acme", SPEC, ("click", "home"), 5000): aggregate(4),
            ("acme", SPEC, ("click", "home-2"), 0): aggregate(7),
            ("acme", SPEC, ("click", "about"), 1000): aggregate(9),
            ("acme", OTHER, ("click", "home"), 0): aggregate(100),
            ("other", SPEC, ("click", "home"), 0): aggregate(100),
        },
    )
    got = windows_of(db, "acme", SPEC, ("click", "home"), 500, 5000)
    assert [(start, a.total) for _, start, a in got] == [(0, 5)]
    got = windows_of(db, "acme", SPEC, ("click", "home"), -1000, 6000)
    assert [start for _, start, _ in got] == [-1000, 0, 5000]
    at_zero = window_keys(db, "acme", SPEC, 0)
    assert sorted((g, a.total) for g, _, a in at_zero) == [(("click", "home"), 5), (("click", "home-2"), 7)]
    assert len(windows_in(db, "acme", SPEC, 0, 2000)) == 3
    db.close()


def test_partials_merge_rank_and_render() -> None:
    one = to_wire([(("click", "home"), 0, aggregate(2)), (("click", "about"), 0, aggregate(1))])
    two = to_wire([(("click", "home"), 0, aggregate(3)), (("click", "faq"), 0, aggregate(4))])
    merged = merge([one, two])
    assert [row["value"] for row in top(SPEC, merged, 2)] == [5, 4]
    rows = windows(SPEC, merged)
    assert [row["key"]["data.page"] for row in rows] == ["about", "faq", "home"]
    assert rows[0]["window_start"] == "1970-01-01T00:00:00Z" and rows[0]["window_end"] == "1970-01-01T00:00:01Z"
    assert to_csv(SPEC, rows).splitlines()[:2] == [
        "type,data.page,window_start,window_end,sum,events",
        "click,about,1970-01-01T00:00:00Z,1970-01-01T00:00:01Z,1,1",
    ]
    text = text_table(to_csv(SPEC, rows)).splitlines()
    assert text[0].split() == ["type", "data.page", "window_start", "window_end", "sum", "events"]
    assert text[2].split() == ["click", "about", "1970-01-01T00:00:00Z", "1970-01-01T00:00:01Z", "1", "1"]


def test_the_retention_sweep_goes_round_in_budgets_and_names_expired_and_orphan_rows(tmp_path: Path) -> None:
    db = Rdict(str(tmp_path / "db"))
    short = TableSpec("short", "web", WindowSpec(1000, 1000), "count", None, ("type",), 0, 1000)
    gone = TableSpec("gone", "web", WindowSpec(1000, 1000), "count", None, ("type",), 0, 10**9)
    now = 10_000
    fill(
        db,
        {
            ("acme", short, ("a",), 7000): aggregate(1),  # ends at 8000: expired at 9000
            ("acme", short, ("a",), 8500): aggregate(1),  # ends at 9500: kept until 10,500
            ("acme", short, ("b",), 1000): aggregate(1),
            ("acme", gone, ("a",), 9000): aggregate(1),  # its table is no longer declared
            ("acme", SPEC, ("a",), 0): aggregate(1),
        },
    )
    tables = {"short": short, "clicks": SPEC}
    doomed: list[bytes] = []
    cursor = b""
    for _ in range(3):  # budgets of 2 over 5 rows: round once
        keys, cursor = expired_rows(db, cursor, budget=2, tables=tables, now_ms=now)
        doomed += keys
    assert sorted(parse_row_key(k)[2:] for k in doomed) == [
        ("gone", ("a",), 9000),
        ("short", ("a",), 7000),
        ("short", ("b",), 1000),
    ]
    assert cursor == b"w\x00"  # back at the start
    db.close()
