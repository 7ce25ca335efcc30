"""Pull subscriptions' pure state: locks, expiry, acks, nacks, the log as arbiter, and per-user order."""

from __future__ import annotations

import pytest

from app.delivery.pull import (
    ACK,
    LOCK,
    NACK,
    Change,
    Ledger,
    Outcome,
    Pending,
    Scan,
    State,
    pull_key,
    split_key,
)

KEY = pull_key("acme", "orders-pull", "evt_1")
LOCK_MS = 30_000


def lock(token: str = "a", lock_ms: int = LOCK_MS) -> Change:
    return Change(LOCK, token, lock_ms)


def event(event_id: str, user: str, partition: int = 0, offset: int = 0, at: int | None = None) -> Pending:
    published = offset if at is None else at
    return Pending(event_id, user, published, partition, offset, {"id": event_id})


# --- the ledger ------------------------------------------------------------------------------------


def test_an_event_nobody_wrote_about_is_available() -> None:
    ledger = Ledger()
    assert ledger.state(KEY, 0) is State.AVAILABLE
    assert not ledger.known(KEY)


def test_a_lock_holds_until_it_ends_then_the_event_is_available_again() -> None:
    ledger = Ledger()
    assert ledger.apply(KEY, lock(), at_ms=1_000) is Outcome.APPLIED
    assert ledger.known(KEY)
    assert ledger.state(KEY, 1_000) is State.LOCKED
    assert ledger.state(KEY, 1_000 + LOCK_MS - 1) is State.LOCKED
    assert ledger.state(KEY, 1_000 + LOCK_MS) is State.AVAILABLE


def test_an_ack_is_final() -> None:
    ledger = Ledger()
    ledger.apply(KEY, lock(), at_ms=0)
    assert ledger.apply(KEY, Change(ACK, "b"), at_ms=5) is Outcome.APPLIED
    assert ledger.state(KEY, 5) is State.ACKED
    assert ledger.state(KEY, 10 * LOCK_MS) is State.ACKED
    # Whatever comes after: a second ack, a lock, a nack; none changes it.
    assert ledger.apply(KEY, Change(ACK, "c"), at_ms=6) is Outcome.ACKED
    assert ledger.apply(KEY, lock("d"), at_ms=7) is Outcome.ACKED
    assert ledger.apply(KEY, Change(NACK, "e"), at_ms=8) is Outcome.ACKED
    assert ledger.state(KEY, 9) is State.ACKED


def test_an_ack_without_a_lock_counts() -> None:
    ledger = Ledger()
    assert ledger.apply(KEY, Change(ACK, "a"), at_ms=0) is Outcome.APPLIED
    assert ledger.state(KEY, 0) is State.ACKED


def test_a_nack_ends_the_lock_at_once() -> None:
    ledger = Ledger()
    ledger.apply(KEY, lock("a"), at_ms=0)
    assert ledger.apply(KEY, Change(NACK, "b"), at_ms=10) is Outcome.APPLIED
    assert ledger.state(KEY, 10) is State.AVAILABLE
    assert ledger.apply(KEY, lock("c"), at_ms=11) is Outcome.APPLIED  # and anyone may take it
    assert ledger.state(KEY, 11) is State.LOCKED


def test_the_first_running_lock_in_log_order_wins() -> None:
    # Two processes claim the same event, each before it has read the other's claim.
    ledger = Ledger()
    assert ledger.apply(KEY, lock("first"), at_ms=100) is Outcome.APPLIED
    assert ledger.apply(KEY, lock("second"), at_ms=101) is Outcome.LOST
    assert ledger.apply(KEY, lock("third"), at_ms=100 + LOCK_MS - 1) is Outcome.LOST
    # Once the winner's lock has ended, the next claim takes it.
    assert ledger.apply(KEY, lock("fourth"), at_ms=100 + LOCK_MS) is Outcome.APPLIED
    assert ledger.state(KEY, 100 + LOCK_MS) is State.LOCKED


def test_every_process_folding_the_same_log_agrees() -> None:
    log = [
        (KEY, lock("p1"), 0),
        (KEY, lock("p2"), 3),
        (pull_key("acme", "orders-pull", "evt_2"), lock("p2"), 4),
        (KEY, Change(NACK, "p1"), 9),
        (KEY, lock("p2"), 10),
    ]
    outcomes = []
    for _ in range(2):
        ledger = Ledger()
        outcomes.append([ledger.apply(key, change, at) for key, change, at in log])
    assert outcomes[0] == outcomes[1]
    assert outcomes[0] == [Outcome.APPLIED, Outcome.LOST, Outcome.APPLIED, Outcome.APPLIED, Outcome.APPLIED]


def test_a_lock_carries_its_own_length() -> None:
    ledger = Ledger()
    ledger.apply(KEY, lock(lock_ms=2_000), at_ms=0)
    assert ledger.state(KEY, 1_999) is State.LOCKED
    assert ledger.state(KEY, 2_000) is State.AVAILABLE


def test_a_tombstone_forgets_the_event() -> None:
    ledger = Ledger()
    ledger.apply(KEY, Change(ACK, "a"), at_ms=0)
    assert ledger.apply(KEY, None, at_ms=1) is Outcome.APPLIED
    assert not ledger.known(KEY)
    assert ledger.state(KEY, 1) is State.AVAILABLE


def test_subscriptions_and_tenants_do_not_share_state() -> None:
    ledger = Ledger()
    ledger.apply(pull_key("acme", "a", "evt_1"), Change(ACK, "x"), at_ms=0)
    assert ledger.state(pull_key("acme", "b", "evt_1"), 0) is State.AVAILABLE
    assert ledger.state(pull_key("globex", "a", "evt_1"), 0) is State.AVAILABLE


# --- records and keys ------------------------------------------------------------------------------


@pytest.mark.parametrize("change", [lock("tok", 1234), Change(ACK, "tok"), Change(NACK, "tok")])
def test_a_change_comes_back_from_its_record(change: Change) -> None:
    assert Change.decode(change.encode()) == change


def test_each_write_gets_its_own_token() -> None:
    assert Change(ACK).token != Change(ACK).token


@pytest.mark.parametrize(
    "value",
    [b"not json", b"[]", b'{"op": "drop", "token": "t"}', b'{"op": "ack"}', b'{"op": "lock", "token": "t"}'],
)
def test_a_record_that_is_not_a_change_is_refused(value: bytes) -> None:
    with pytest.raises(ValueError):
        Change.decode(value)


def test_an_event_id_may_hold_colons() -> None:
    assert split_key(pull_key("acme", "orders-pull", "/shop#a:b:c")) == ("acme", "orders-pull", "/shop#a:b:c")


# --- the scan: which event goes next ---------------------------------------------------------------


def scan_of(ledger: Ledger, events: list[Pending | tuple[int, int]], now_ms: int = 0, cutoff_ms: int = 0) -> Scan:
    """Feed events (or (partition, offset) of records that are not the subscription's) in order."""
    scan = Scan(ledger, "acme", "orders-pull", now_ms, cutoff_ms=cutoff_ms)
    for item in events:
        if isinstance(item, Pending):
            scan.add(item.partition, item.offset, item)
        else:
            scan.add(item[0], item[1], None)
    return scan


def ids(events: list[Pending]) -> list[str]:
    return [e.id for e in events]


def test_the_earliest_events_go_first_across_partitions() -> None:
    events = [event("b", "u2", 1, 0, at=20), event("a", "u1", 0, 0, at=10), event("c", "u3", 2, 0, at=15)]
    assert ids(scan_of(Ledger(), list(events)).available) == ["a", "c", "b"]


def test_a_users_later_event_waits_while_an_earlier_one_is_locked() -> None:
    ledger = Ledger()
    first, second, other = event("e1", "u", 0, 0), event("e2", "u", 0, 1), event("x1", "v", 0, 2)
    ledger.apply(pull_key("acme", "orders-pull", "e1"), lock(), at_ms=0)
    scan = scan_of(ledger, [first, second, other], now_ms=1)
    assert ids(scan.available) == ["x1"]  # not e2: e1 is locked and not acked
    assert ids(scan.unacked()) == ["e1", "e2", "x1"]  # a listing shows locked events too


def test_a_users_next_event_goes_once_the_earlier_one_is_acked() -> None:
    ledger = Ledger()
    ledger.apply(pull_key("acme", "orders-pull", "e1"), lock(), at_ms=0)
    ledger.apply(pull_key("acme", "orders-pull", "e1"), Change(ACK, "b"), at_ms=1)
    scan = scan_of(ledger, [event("e1", "u", 0, 0), event("e2", "u", 0, 1)], now_ms=2)
    assert ids(scan.available) == ["e2"]
    assert ids(scan.unacked()) == ["e2"]


def test_a_nacked_or_expired_event_goes_before_the_users_later_ones() -> None:
    for release in (Change(NACK, "b"), None):
        ledger = Ledger()
        ledger.apply(pull_key("acme", "orders-pull", "e1"), lock(), at_ms=0)
        now = 1
        if release is None:
            now = LOCK_MS  # the lock has ended
        else:
            ledger.apply(pull_key("acme", "orders-pull", "e1"), release, at_ms=1)
        scan = scan_of(ledger, [event("e1", "u", 0, 0), event("e2", "u", 0, 1)], now_ms=now)
        assert ids(scan.available) == ["e1"]


def test_a_user_waiting_does_not_hold_up_others_in_the_partition() -> None:
    ledger = Ledger()
    ledger.apply(pull_key("acme", "orders-pull", "e1"), lock(), at_ms=0)
    scan = scan_of(ledger, [event("e1", "u", 0, 0), event("e2", "u", 0, 1), event("f1", "v", 0, 2)], now_ms=1)
    assert scan.available_in(0) == 1
    assert ids(scan.available) == ["f1"]


def test_an_id_sent_twice_is_one_event() -> None:
    ledger = Ledger()
    scan = scan_of(ledger, [event("e1", "u", 0, 0), event("e1", "u", 0, 1), event("e2", "v", 0, 2)])
    assert ids(scan.unacked()) == ["e1", "e2"]
    assert scan.seen("e1") and not scan.seen("nope")
    ledger.apply(pull_key("acme", "orders-pull", "e1"), Change(ACK, "a"), at_ms=0)
    scan = scan_of(ledger, [event("e1", "u", 0, 0), event("e1", "u", 0, 1), event("e2", "v", 0, 2)])
    assert ids(scan.unacked()) == ["e2"]  # acking it acks every copy
    assert scan.settled == {0: 2}


def test_the_settled_prefix_stops_at_the_first_event_not_acked() -> None:
    ledger = Ledger()
    ledger.apply(pull_key("acme", "orders-pull", "a"), Change(ACK, "t"), at_ms=0)
    scan = scan_of(
        ledger,
        [
            (0, 0),  # another tenant's, or filtered out
            event("a", "u", 0, 1),  # acked
            (1, 5),
            event("b", "u", 0, 2),  # waiting: the floor of partition 0 stops here
            (0, 3),
            event("c", "w", 1, 6),
        ],
    )
    assert scan.settled == {0: 2, 1: 6}


def test_a_cutoff_leaves_older_events_out_of_the_listing_but_not_out_of_the_order() -> None:
    ledger = Ledger()
    scan = scan_of(ledger, [event("old", "u", 0, 0, at=5), event("new", "u", 0, 1, at=50)], cutoff_ms=10)
    assert ids(scan.unacked()) == ["new"]
    assert ids(scan.available) == ["old"]  # still the user's first event not acked
    assert scan.unacked_in(0) == 1
