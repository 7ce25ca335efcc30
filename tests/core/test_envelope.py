"""The envelope's record form: `from_record` gives back the envelope `to_record` came from, and it stays frozen."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core.envelope import Envelope

texts = st.text(max_size=8)
moments = st.datetimes(timezones=st.just(UTC))
json_objects = st.dictionaries(texts, st.integers(-(2**63), 2**63 - 1) | texts | st.booleans() | st.none(), max_size=3)
envelopes = st.builds(
    Envelope,
    id=texts,
    tenant=texts,
    topic=texts,
    type=texts,
    user_id=texts,
    occurred_at=moments,
    received_at=moments,
    dialect=texts,
    data=json_objects,
    metadata=json_objects,
    sent_at=st.none() | moments,
    send_at=st.none() | moments,
    audience=st.none() | texts,
    wait_group_instance_id=st.none() | texts,
)


@given(envelopes)
def test_from_record_gives_back_the_envelope(envelope: Envelope) -> None:
    again = Envelope.from_record(envelope.to_record())
    assert again == envelope
    assert type(again) is Envelope
    assert {field.name: getattr(again, field.name) for field in dataclasses.fields(Envelope)} == {
        field.name: getattr(envelope, field.name) for field in dataclasses.fields(Envelope)
    }


def test_a_decoded_envelope_is_frozen_and_a_record_missing_a_field_is_refused() -> None:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    record = Envelope("e1", "t", "orders", "placed", "u1", at, at, "pubsub").to_record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        Envelope.from_record(record).type = "other"  # type: ignore[misc]
    del record["dialect"]
    with pytest.raises(KeyError):
        Envelope.from_record(record)
