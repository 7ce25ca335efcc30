"""The window engine against a naive reference: event time, hopping windows, grace, lateness, crash replays."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from app.analytics.aggregate import Aggregate
from app.analytics.engine import Batch, Progress, decode_row
from app.analytics.rows import meta_key, parse_row_key
from app.analytics.spec import TableSpec, WindowSpec
from app.analytics.windows import window_starts
from app.core.envelope import Envelope
from app.core.instants import EPOCH
from tests.support.windows import event, reference

NOW_MS = 10_000_000
SOURCE = "events.shop"


def table(size: int, step: int, grace: int, aggregation: str = "count", field: str | None = None) -> TableSpec:
    return TableSpec(
        name=f"t_{aggregation}_{size}_{step}_{grace}",
        topic="shop",
        window=WindowSpec(size, step),
        aggregation=aggregation,
        field=field,
        group_by=("type",),
        grace_ms=grace,
        retention_ms=10**12,
    )


def envelope(t_ms: int, kind: str, amount: float | None, user: str = "u1") -> Envelope:
    data = {} if amount is None else {"amount": amount}
    return event("acme", user, EPOCH + timedelta(milliseconds=t_ms), kind, **data)


def run(
    store: dict[bytes, bytes], events: list[tuple[int, Envelope]], tables: list[TableSpec], cut: int | None = None
) -> None:
    """Apply events as one batch and write its records; with `cut`, only the first `cut` (a crash)."""
    batch = Batch(store.get, SOURCE, now_ms=NOW_MS)
    for offset, item in events:
        batch.apply(item, offset, tables)
    writes = batch.writes()
    for key, value in writes[: len(writes) if cut is None else cut]:
        store[key] = value


def rows(store: dict[bytes, bytes], spec: TableSpec) -> dict[tuple[str, int], Aggregate]:
    out = {}
    for key, value in store.items():
        if key.startswith(b"w\x00"):
            _, _, name, group, start = parse_row_key(key)
            if name == spec.name:
                out[group[0], start] = decode_row(value)[1]
    return out


times = st.integers(min_value=0, max_value=100_000)
events_strategy = st.lists(
    st.tuples(times, st.sampled_from(["a", "b"]), st.one_of(st.none(), st.integers(-50, 50))), max_size=40
)
windows_strategy = st.tuples(st.integers(1, 5), st.integers(1, 5), st.integers(0, 3)).map(
    lambda sizes: (max(sizes[0], sizes[1]) * 1000, min(sizes[0], sizes[1]) * 1000, sizes[2] * 1000)
)


@settings(max_examples=150, deadline=None)
@given(events_strategy, windows_strategy)
def test_counts_sums_and_lateness_match_the_reference(
    raw: list[tuple[int, str, int | None]], window: tuple[int, int, int]
) -> None:
    size, step, grace = window
    count, total = table(size, step, grace), table(size, step, grace, "sum", "data.amount")
    low, mean = table(size, step, grace, "min", "data.amount"), table(size, step, grace, "mean", "data.amount")
    events = [envelope(t, kind, amount) for t, kind, amount in raw]
    store: dict[bytes, bytes] = {}
    run(store, list(enumerate(events)), [count, total, low, mean])
    progress = Progress.decode(store.get(meta_key(SOURCE)))
    for spec in (count, total, low, mean):
        expected, late = reference(events, spec)
        got = rows(store, spec)
        assert set(got) == {(group[0], start) for group, start in expected}
        for (group, start), values in expected.items():
            key = (group[0], start)
            assert got[key].count == len(values)
            if spec.aggregation == "sum":
                assert got[key].value("sum") == sum(values)
            if spec.aggregation == "min":
                assert got[key].value("min") == min(values)
            if spec.aggregation == "mean":
                assert got[key].value("mean") == sum(values) / len(values)
        assert progress.late.get("acme", {}).get(spec.name, 0) == len(late)


@settings(max_examples=150, deadline=None)
@given(events_strategy, windows_strategy, st.data())
def test_a_crash_at_any_write_then_a_replay_counts_each_event_once(
    raw: list[tuple[int, str, int | None]], window: tuple[int, int, int], data: st.DataObject
) -> None:
    specs = [table(*window), table(*window, "sum", "data.amount")]
    events = list(enumerate(envelope(t, kind, amount) for t, kind, amount in raw))
    clean: dict[bytes, bytes] = {}
    run(clean, events, specs)
    crashed: dict[bytes, bytes] = {}
    split = data.draw(st.integers(0, len(events)), label="first batch")
    run(crashed, events[:split], specs)
    # The second batch writes only a prefix of its records, then everything since the
    # last commit (anywhere up to the split) comes again.
    cut = data.draw(st.integers(0, len(events[split:]) * 4 + 1), label="records kept")
    run(crashed, events[split:], specs, cut=cut)
    replay_from = data.draw(st.integers(0, split), label="replay from")
    run(crashed, events[replay_from:], specs)
    assert crashed == clean


def test_distinct_users_are_exact_and_partials_merge_by_size() -> None:
    spec = TableSpec("users", "shop", WindowSpec(1000, 1000), "distinct_users", None, ("type",), 0, 10**9)
    events = [envelope(10, "a", None, user) for user in ("u1", "u2", "u1", "u3")]
    store: dict[bytes, bytes] = {}
    run(store, list(enumerate(events)), [spec])
    (aggregate,) = rows(store, spec).values()
    assert aggregate.value("distinct_users") == 3
    other = Aggregate()
    other.add(None, "u9")
    merged = Aggregate()
    merged.merge(aggregate)
    merged.merge(other)
    assert merged.value("distinct_users") == 4


def test_windows_past_retention_are_not_written_and_count_as_late() -> None:
    spec = TableSpec("kept", "shop", WindowSpec(1000, 1000), "count", None, ("type",), 0, 2000)
    store: dict[bytes, bytes] = {}
    run(store, [(0, envelope(NOW_MS - 5000, "a", None)), (1, envelope(NOW_MS - 500, "a", None))], [spec])
    assert [start for _, start in rows(store, spec)] == [NOW_MS - 1000]
    assert Progress.decode(store[meta_key(SOURCE)]).late == {"acme": {"kept": 1}}


@given(st.integers(-(10**12), 10**12), st.integers(1, 10**6), st.integers(1, 100))
def test_window_starts_hold_the_instant_and_nothing_else(t: int, step: int, ratio: int) -> None:
    window = WindowSpec(step * ratio, step)
    starts = window_starts(t, window)
    assert len(starts) == ratio
    assert all(start <= t < start + window.size_ms and start % window.step_ms == 0 for start in starts)
    assert starts[0] - window.step_ms + window.size_ms <= t  # the one before does not hold it
    assert starts[-1] + window.step_ms > t  # nor the one after
