"""Epoch-millisecond conversions: exact, and equal to timedelta's own arithmetic over the whole datetime range."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from app.core.instants import EPOCH, epoch_ms, from_epoch_ms

LOWEST_MS = (datetime.min.replace(tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1) + 1
HIGHEST_MS = (datetime.max.replace(tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
OFFSETS = st.integers(-23 * 60, 23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))


@given(st.integers(LOWEST_MS, HIGHEST_MS))
def test_from_epoch_ms_is_exact(ms: int) -> None:
    moment = from_epoch_ms(ms)
    assert moment == EPOCH + timedelta(milliseconds=ms)
    assert moment.tzinfo is UTC
    assert epoch_ms(moment) == ms


@given(st.datetimes(timezones=OFFSETS))
def test_epoch_ms_floors_to_the_millisecond(moment: datetime) -> None:
    expected = (moment - EPOCH) // timedelta(milliseconds=1)
    assert epoch_ms(moment) == expected
    assert from_epoch_ms(expected) <= moment < from_epoch_ms(expected + 1)


def test_known_instants() -> None:
    assert epoch_ms(datetime(2024, 1, 2, 3, 4, 5, 678999, tzinfo=UTC)) == 1_704_164_645_678
    assert from_epoch_ms(-1) == datetime(1969, 12, 31, 23, 59, 59, 999000, tzinfo=UTC)
