"""Webhook signatures per Standard Webhooks, checked against the standardwebhooks library; delivery ids."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from app.core.subscription import Subscription
from app.delivery.signature import (
    ID_HEADER,
    PREVIOUS_SECRET_OVERLAP,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    delivery_id,
    headers,
    key_of,
    new_secret,
    sign,
    signing_secrets,
    verify,
)

BODY = b'{"id":"dlv_1","record":{"a":1}}'
NOW = datetime(2026, 4, 14, 12, 0, tzinfo=UTC)


def now_s() -> int:
    return int(datetime.now(UTC).timestamp())


def test_a_new_secret_is_whsec_and_the_base64_of_32_random_bytes() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) == 32
    assert new_secret() != secret
    assert key_of(secret) == base64.b64decode(secret.removeprefix("whsec_"))


def test_the_headers_verify_with_the_standardwebhooks_library() -> None:
    secret, timestamp = new_secret(), now_s()
    sent = headers([secret], "dlv_1", timestamp, BODY)
    assert sent[ID_HEADER] == "dlv_1" and sent[TIMESTAMP_HEADER] == str(timestamp)
    assert sent[SIGNATURE_HEADER].startswith("v1,")
    assert Webhook(secret).verify(BODY, sent) == {"id": "dlv_1", "record": {"a": 1}}
    # The very value the library computes, for the id, the time and the bytes as sent.
    assert sent[SIGNATURE_HEADER] == Webhook(secret).sign("dlv_1", datetime.fromtimestamp(timestamp, UTC), BODY)


@pytest.mark.parametrize(
    "tampered",
    [
        {"body": BODY.replace(b"1}", b"2}")},
        {"message_id": "dlv_2"},
        {"timestamp": -1},
    ],
)
def test_a_changed_body_id_or_timestamp_does_not_verify(tampered: dict[str, object]) -> None:
    secret, timestamp = new_secret(), now_s()
    sent = headers([secret], "dlv_1", timestamp, BODY)
    body = tampered.get("body", BODY)
    if "message_id" in tampered:
        sent[ID_HEADER] = "dlv_2"
    if "timestamp" in tampered:
        sent[TIMESTAMP_HEADER] = str(timestamp - 1)
    assert isinstance(body, bytes)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body, sent)
    assert not verify(secret, sent, body, timestamp)


def test_another_secret_or_an_old_timestamp_does_not_verify() -> None:
    secret = new_secret()
    sent = headers([secret], "dlv_1", now_s(), BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, sent)
    old = headers([secret], "dlv_1", now_s() - 3600, BODY)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(BODY, old)
    assert verify(secret, sent, BODY, now_s()) and not verify(secret, old, BODY, now_s())


def test_two_secrets_give_two_signatures_and_either_verifies() -> None:
    new, old = new_secret(), new_secret()
    sent = headers([new, old], "dlv_1", now_s(), BODY)
    assert len(sent[SIGNATURE_HEADER].split(" ")) == 2
    for secret in (new, old):
        Webhook(secret).verify(BODY, sent)
        assert verify(secret, sent, BODY, now_s())
    with pytest.raises(WebhookVerificationError):
        Webhook(new_secret()).verify(BODY, sent)


def test_the_previous_secret_signs_only_during_its_overlap() -> None:
    hook = Subscription("acme", "h", "effects", url="https://example.com/hook", secret="whsec_bmV3")
    assert signing_secrets(hook, NOW) == ["whsec_bmV3"]
    rotated = Subscription(
        "acme",
        "h",
        "effects",
        url="https://example.com/hook",
        secret="whsec_bmV3",
        previous_secret="whsec_b2xk",
        previous_secret_until=NOW + PREVIOUS_SECRET_OVERLAP,
    )
    assert rotated == hook  # a rotation keeps the subscription the same
    assert signing_secrets(rotated, NOW) == ["whsec_bmV3", "whsec_b2xk"]
    assert signing_secrets(rotated, NOW + PREVIOUS_SECRET_OVERLAP) == ["whsec_bmV3"]
    assert timedelta(hours=24) == PREVIOUS_SECRET_OVERLAP


@pytest.mark.parametrize("secret", ["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_unpadded", "plain-text-1"])
def test_keys_are_derived_as_the_library_derives_them(secret: str) -> None:
    timestamp = now_s()
    Webhook(secret).verify(BODY, headers([secret], "dlv_1", timestamp, BODY))


def test_a_secret_the_library_cannot_decode_is_keyed_by_its_bytes() -> None:
    secret = "my-secrets"  # 'mysecrets' once the library skips '-': 9 characters are not base64
    with pytest.raises(binascii.Error):
        Webhook(secret)
    assert key_of(secret) == b"my-secrets"
    Webhook(secret.encode()).verify(BODY, headers([secret], "dlv_1", now_s(), BODY))


def test_sign_is_deterministic() -> None:
    assert sign("whsec_a2V5", "dlv_1", 1_700_000_000, BODY) == sign("whsec_a2V5", "dlv_1", 1_700_000_000, BODY)
    assert sign("whsec_a2V5", "dlv_1", 1_700_000_000, BODY) != sign("whsec_a2V5", "dlv_1", 1_700_000_001, BODY)


def test_a_delivery_id_is_stable_and_distinct_per_position() -> None:
    one = delivery_id("acme:hook", "effects", 1, 42)
    assert one == delivery_id("acme:hook", "effects", 1, 42)
    assert len({one, delivery_id("acme:hook", "effects", 1, 43), delivery_id("acme:other", "effects", 1, 42)}) == 3
