from app.ledger import UserRecord
from app.worker.recent_users import RecentUsers


def user(seq: int) -> UserRecord:
    return UserRecord(seq=seq)


def test_records_are_kept_for_the_generation_and_forgotten_at_the_next() -> None:
    recent = RecentUsers(10)
    recent.of(3)
    recent.keep([(b"a", user(1))])
    assert recent.of(3) == {b"a": user(1)}
    assert recent.of(4) == {}  # a rebalance: recovery may have rewritten RocksDB
    assert recent.of(3) == {}


def test_past_capacity_the_oldest_half_goes_and_a_kept_record_is_young_again() -> None:
    recent = RecentUsers(4)
    recent.of(1)
    recent.keep([(b"a", user(1)), (b"b", user(1)), (b"c", user(1)), (b"d", user(1))])
    recent.keep([(b"a", user(2))])  # a is now the youngest
    recent.keep([(b"e", user(1))])
    assert recent.of(1) == {b"a": user(2), b"e": user(1)}


def test_no_capacity_keeps_nothing() -> None:
    recent = RecentUsers(0)
    recent.of(1)
    recent.keep([(b"a", user(1))])
    assert recent.of(1) == {}
