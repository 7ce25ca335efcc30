"""Webhook signatures and delivery ids."""

from __future__ import annotations

from app.delivery.signature import delivery_id, sign, verify


def test_a_signature_verifies_and_a_changed_body_or_old_timestamp_does_not() -> None:
    header = sign("whsec_k", 1_700_000_000, b'{"a":1}')
    assert header.startswith("t=1700000000,v1=")
    assert len(header.split("v1=")[1]) == 64
    assert verify("whsec_k", header, b'{"a":1}', now=1_700_000_010)
    assert not verify("whsec_k", header, b'{"a":2}', now=1_700_000_010)
    assert not verify("whsec_other", header, b'{"a":1}', now=1_700_000_010)
    assert not verify("whsec_k", header, b'{"a":1}', now=1_700_000_000 + 3600)


def test_a_delivery_id_is_stable_and_distinct_per_position() -> None:
    one = delivery_id("acme:hook", "effects", 1, 42)
    assert one == delivery_id("acme:hook", "effects", 1, 42)
    assert len({one, delivery_id("acme:hook", "effects", 1, 43), delivery_id("acme:other", "effects", 1, 42)}) == 3
