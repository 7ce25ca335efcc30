"""A position in a Kafka topic as opaque text: the next offset of every partition, compact and URL-safe.

The cursors of subscription polling, SSE event ids, notices and dead-letter listings."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

from app.core.fields import is_count
from app.errors import ValidationError

MAX_LENGTH = 4096


def encode(positions: Mapping[int, int]) -> str:
    """`{partition: next offset}` as base64url text, such as `MDo1LDE6Mw` for {0: 5, 1: 3}.

    Every partition is in it, so resuming from it is exact whatever the partition count.
    """
    text = ",".join(f"{partition}:{offset}" for partition, offset in sorted(positions.items()))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode(cursor: str, field: str, partitions: int, giver: str = "stream") -> dict[int, int]:
    """The positions a cursor holds; a malformed one is a 400 naming `field` (and what gives such cursors out)."""

    def refuse(reason: str) -> ValidationError:
        return ValidationError(f"not a cursor this {giver} gave out: {reason}", field=field, code="invalid_cursor")

    if len(cursor) > MAX_LENGTH:
        raise refuse("too long")
    try:
        text = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise refuse("not base64url") from None
    positions: dict[int, int] = {}
    for item in text.split(",") if text else []:
        partition, sep, offset = item.partition(":")
        # An offset is a signed 64-bit number, up to 19 digits; check_reachable refuses one past the end.
        if not sep or not is_count(partition, 9) or not is_count(offset, 19):
            raise refuse("not partition:offset pairs")
        number = int(partition)
        if number >= partitions:
            raise refuse(f"partition {number} does not exist")
        if number in positions:
            raise refuse(f"partition {number} twice")
        positions[number] = int(offset)
    return positions


def check_reachable(positions: Mapping[int, int], ends: Mapping[int, int], field: str) -> None:
    """Refuse positions past the end of their partition: no cursor this stream gave out is."""
    for partition, offset in sorted(positions.items()):
        if offset > ends.get(partition, 0):
            raise ValidationError(
                f"not a cursor this stream gave out: partition {partition} ends at {ends.get(partition, 0)}",
                field=field,
                code="invalid_cursor",
            )
