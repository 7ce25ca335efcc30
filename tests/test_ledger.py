"""The ledger under crashes: any prefix of writes and effects may survive; the outcome never changes."""

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from hypothesis import example, given, settings
from hypothesis import strategies as st

from app import ledger
from app.catalog import Catalog
from app.core.envelope import Envelope
from app.core.instants import epoch_ms
from app.rules import Fact, UserState, apply
from app.rules.model import Streak
from app.worker.recent_users import RecentUsers

REPO = Path(__file__).resolve().parents[1]
ORDERS = Catalog.load(REPO / "topics")["orders"]
T0 = datetime(2026, 11, 1, tzinfo=UTC)
WINDOW = 7 * 24 * 3600
SOURCE = "events.orders"


def envelope(event_id: str, user: str, kind: str) -> Envelope:
    return Envelope(
        id=event_id,
        tenant="t",
        topic="orders",
        type=kind,
        user_id=user,
        occurred_at=T0,
        received_at=T0,
        dialect="pubsub",
    )


def run_batch(
    events: list[tuple[Envelope, int]],
    table: dict[bytes, bytes],
    now: datetime = T0,
    known: RecentUsers | None = None,
) -> tuple[list[ledger.Step], list[tuple[bytes, bytes]]]:
    """Steps of one batch and its writes in the order the worker makes them: entries, then users.

    With `known`, user records are taken from it as the worker takes them, and kept in it after.
    """
    batch = ledger.Batch(table.get, now=now, dedupe_window_s=WINDOW, known=known.of(0) if known else None)
    steps = [
        batch.step(event, source_topic=SOURCE, offset=offset, rules=ORDERS.rules, rules_version=ORDERS.rules_version)
        for event, offset in events
    ]
    if known is not None:
        known.keep(batch.user_records)
    return steps, batch.entries + batch.users


def run(event: Envelope, offset: int, table: dict[bytes, bytes], now: datetime = T0) -> ledger.Step:
    """One event as a batch of its own, written to `table`."""
    (step,), writes = run_batch([(event, offset)], table, now)
    table.update(writes)
    return step


def totals(table: dict[bytes, bytes], tenant: str, user: str) -> UserState:
    raw = table.get(orjson.dumps(["u", tenant, user]))
    return UserState.from_dict(orjson.loads(raw)["state"]) if raw else UserState()


def test_first_delivery_applies_and_a_resend_is_a_duplicate() -> None:
    table: dict[bytes, bytes] = {}
    first = run(envelope("e1", "u1", "orders"), 0, table)
    assert first.outcome is ledger.Outcome.APPLIED
    assert set(table) == set(ledger.keys(envelope("e1", "u1", "orders")))
    before = dict(table)
    again = run(envelope("e1", "u1", "orders"), 1, table)
    assert again.outcome is ledger.Outcome.DUPLICATE
    assert again.effect is None and table == before
    assert again.reply == {**(first.effect or {}), "replayed": True}  # the cached effect, for the replies topic
    assert first.effect is not None and first.effect["totals"]["coins"] == 10


def test_redelivery_of_the_same_record_replays_the_same_effect() -> None:
    table: dict[bytes, bytes] = {}
    event = envelope("e1", "u1", "orders")
    (first,), writes = run_batch([(event, 0)], table)
    table.update(writes[:1])  # crashed after the entry, before the user record
    again = run(event, 0, table)
    assert again.outcome is ledger.Outcome.REDELIVERED
    assert again.effect == first.effect
    assert totals(table, "t", "u1") == UserState(points={"coins": 10}, counters={"orders": 1})


def test_a_batch_writes_entries_first_and_each_user_once() -> None:
    table: dict[bytes, bytes] = {}
    events = [(envelope("e1", "u1", "orders"), 0), (envelope("e2", "u1", "orders"), 1), (envelope("e1", "u1", "x"), 2)]
    steps, writes = run_batch(events, table)
    assert [step.outcome for step in steps] == [
        ledger.Outcome.APPLIED,
        ledger.Outcome.APPLIED,
        ledger.Outcome.DUPLICATE,
    ]
    e1, user = ledger.keys(envelope("e1", "u1", "orders"))
    e2, _ = ledger.keys(envelope("e2", "u1", "orders"))
    assert [key for key, _ in writes] == [e1, e2, user]
    table.update(writes)
    assert totals(table, "t", "u1") == UserState(points={"coins": 20}, counters={"orders": 2})


def test_entries_expire_after_the_window() -> None:
    table: dict[bytes, bytes] = {}
    run(envelope("e1", "u1", "orders"), 0, table)
    later = T0 + timedelta(seconds=WINDOW + 1)
    assert run(envelope("e1", "u1", "orders"), 5, table, now=later).outcome is ledger.Outcome.APPLIED


def test_a_redelivery_after_its_entry_expired_is_not_applied_again() -> None:
    table: dict[bytes, bytes] = {}
    run(envelope("e1", "u1", "orders"), 0, table)
    later = T0 + timedelta(seconds=WINDOW + 1)
    assert run(envelope("e1", "u1", "orders"), 0, table, now=later).outcome is ledger.Outcome.DUPLICATE
    assert totals(table, "t", "u1") == UserState(points={"coins": 10}, counters={"orders": 1})


def test_a_record_skipped_and_delivered_after_later_ones_is_still_applied() -> None:
    # faust can skip a record while it seeks after recovery, then deliver it again (crash test).
    table: dict[bytes, bytes] = {}
    run(envelope("e2", "u1", "orders"), 80, table)
    assert run(envelope("e1", "u1", "orders"), 79, table).outcome is ledger.Outcome.APPLIED
    assert totals(table, "t", "u1") == UserState(points={"coins": 20}, counters={"orders": 2})


def test_a_redelivery_after_a_skip_restores_the_user_record_it_lost() -> None:
    table: dict[bytes, bytes] = {}
    run(envelope("e2", "u1", "orders"), 80, table)
    _, writes = run_batch([(envelope("e1", "u1", "orders"), 79)], table)
    table.update(writes[:1])  # crashed after the entry, before the user record
    assert run(envelope("e1", "u1", "orders"), 79, table).outcome is ledger.Outcome.REDELIVERED
    assert totals(table, "t", "u1") == UserState(points={"coins": 20}, counters={"orders": 2})


@dataclass
class Partition:
    """One source partition, its changelog (the table) and the effects written, with crashes."""

    table: dict[bytes, bytes] = field(default_factory=dict)
    pending_writes: list[tuple[bytes, bytes]] = field(default_factory=list)
    effects: list[dict[str, Any]] = field(default_factory=list)
    pending_effects: list[dict[str, Any]] = field(default_factory=list)
    committed: int = 0  # next offset to read after a restart

    def crash(self, keep_writes: int, keep_effects: int) -> None:
        # Unflushed changelog writes and effect sends are lost from the end, each stream on its own.
        for key, value in self.pending_writes[:keep_writes]:
            self.table[key] = value
        self.effects.extend(self.pending_effects[:keep_effects])
        self.pending_writes.clear()
        self.pending_effects.clear()

    def commit(self, offset: int) -> None:
        self.table.update(self.pending_writes)
        self.effects.extend(self.pending_effects)
        self.pending_writes.clear()
        self.pending_effects.clear()
        self.committed = offset


records = st.lists(
    st.tuples(
        st.sampled_from([f"e{i}" for i in range(12)]),
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(["orders", "order_placed", "refund"]),
    ),
    min_size=1,
    max_size=40,
)
crashes = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 80), st.integers(0, 80)), max_size=4)


@settings(max_examples=300, deadline=None)
@given(records, crashes, st.integers(1, 5), st.integers(1, 6), st.sampled_from([0, 1, 50]))
# A crash loses a batch whose user records the worker kept parsed: its successor must not use them.
@example([("e1", "u1", "orders"), ("e2", "u1", "orders"), ("e3", "u1", "orders")], [(1, 0, 0)], 5, 2, 50)
def test_crashes_never_lose_or_double_an_effect(
    log: list[tuple[str, str, str]],
    crash_plan: list[tuple[int, int, int]],
    commit_every: int,
    batch_size: int,
    cached_users: int,
) -> None:
    part = Partition()
    known = RecentUsers(cached_users)  # what the worker keeps parsed; a crash starts a new process
    crash_at = {at: (w, e) for at, w, e in crash_plan}
    offset = 0
    batches = 0
    while offset < len(log):
        # The first delivery of an id wins: later ones carry the same id with other content.
        taken = [(envelope(*log[at]), at) for at in range(offset, min(offset + batch_size, len(log)))]
        steps, writes = run_batch(taken, {**part.table, **dict(part.pending_writes)}, known=known)
        part.pending_writes.extend(writes)
        part.pending_effects.extend(dict(step.effect) for step in steps if step.effect is not None)
        batches += 1
        offset += len(taken)
        if batches in crash_at:
            keep_writes, keep_effects = crash_at.pop(batches)
            part.crash(keep_writes, keep_effects)
            known = RecentUsers(cached_users)
            offset = part.committed
        elif batches % commit_every == 0 or offset == len(log):
            part.commit(offset)

    expected: dict[str, UserState] = {}
    firsts: dict[str, tuple[str, str]] = {}
    for event_id, user, kind in log:
        if event_id in firsts:
            continue
        firsts[event_id] = (user, kind)
        expected[user], _ = apply(expected.get(user, UserState()), Fact(kind, T0), ORDERS.rules)
    for user, state in expected.items():
        assert totals(part.table, "t", user) == state
    by_id: dict[str, list[dict[str, Any]]] = {}
    for effect in part.effects:
        by_id.setdefault(effect["event_id"], []).append(effect)
    assert set(by_id) == set(firsts)
    for event_id, effects in by_id.items():
        assert all(effect == effects[0] for effect in effects), event_id
        assert effects[0]["user_id"] == firsts[event_id][0]


names = st.text("abcxyz", min_size=1, max_size=4)
amounts = st.dictionaries(names, st.integers(-(2**40), 2**40), max_size=3)
states = st.builds(
    UserState,
    points=amounts,
    counters=amounts,
    badges=st.lists(names, max_size=3).map(tuple),
    badges_ready=st.lists(names, max_size=3).map(tuple),
    tokens=amounts,
    streaks=st.dictionaries(names, st.builds(Streak, st.integers(0, 99), st.integers(0, 99), st.integers(0, 10**6))),
    levels=amounts,
    windows=st.dictionaries(names, st.lists(st.integers(0, 2**45), max_size=3).map(tuple), max_size=2),
)
records_of = st.builds(ledger.UserRecord, states, st.integers(0, 10**6), st.dictionaries(names, st.integers(0, 10**9)))


@given(records_of, st.dictionaries(names, st.integers(-(2**63), 2**63 - 1) | names, max_size=3))
def test_table_values_read_back_as_written(user: ledger.UserRecord, effect: dict[str, Any]) -> None:
    assert ledger.UserRecord.from_dict(orjson.loads(ledger.dump(user))) == user
    entry = ledger.Entry(1_795_000_000_000, "events.orders", 7, effect, user)
    assert ledger.Entry.from_dict(orjson.loads(ledger.dump(entry))) == entry
    assert ledger.applied_at(ledger.dump(entry)) == 1_795_000_000_000


@given(st.integers(-(2**62), 2**62), st.booleans())
def test_the_sweep_reads_when_an_entry_was_applied(millis: int, other_layout: bool) -> None:
    value = {"topic": "t", "applied_at_ms": millis} if other_layout else {"applied_at_ms": millis, "topic": "t"}
    assert ledger.applied_at(orjson.dumps(value)) == millis


@given(records_of, st.sampled_from(["orders", "order_placed", "refund"]), st.integers(0, 10**9))
def test_an_applied_event_writes_the_entry_dump_writes(user: ledger.UserRecord, kind: str, offset: int) -> None:
    """The entry `step` writes is, byte for byte, `dump` of the Entry: the effect record of `apply`, the user after."""
    event = envelope("e1", "u1", kind)
    entry_key, user_key = ledger.keys(event)
    batch = ledger.Batch({user_key: ledger.dump(user)}.get, now=T0, dedupe_window_s=WINDOW)
    step = batch.step(event, source_topic=SOURCE, offset=offset, rules=ORDERS.rules, rules_version=ORDERS.rules_version)
    state, effect = apply(user.state, Fact(kind, T0), ORDERS.rules)
    record = ledger.effect_record(event, effect, ORDERS.rules_version)
    after = user.after(state, SOURCE, offset)
    assert step.effect == record
    assert batch.entries == [(entry_key, ledger.dump(ledger.Entry(epoch_ms(T0), SOURCE, offset, record, after)))]
    assert batch.users == [(user_key, ledger.dump(after))]
