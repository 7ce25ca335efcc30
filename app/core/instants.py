"""Instants as Kafka records and Avro's timestamp-millis carry them: whole milliseconds since the epoch."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Built once: constructing a timedelta from keywords costs three times the arithmetic around it,
# and both conversions below run for every event the worker applies.
_MS = timedelta(milliseconds=1)


def epoch_ms(moment: datetime) -> int:
    """Whole milliseconds since the epoch of an aware datetime, without float rounding."""
    return (moment - EPOCH) // _MS


def from_epoch_ms(ms: int) -> datetime:
    # A timedelta times an int is exact integer arithmetic on microseconds.
    return EPOCH + _MS * ms
