"""What a subscriber receives for a record: JSON, with an event's data and metadata as objects."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson


def record_json(stream: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The decoded Avro record as a JSON-ready dict; events carry data and metadata as JSON text in Avro."""
    document = dict(record)
    if stream == "events":
        for name in ("data", "metadata"):
            if isinstance(document.get(name), str):
                document[name] = orjson.loads(document[name])
    return document


def dumps(document: Any) -> bytes:
    # Datetimes (Avro timestamp-millis) come out as RFC 3339 text.
    return orjson.dumps(document, option=orjson.OPT_UTC_Z)
