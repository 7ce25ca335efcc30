"""Webhook signatures per Standard Webhooks (webhook-id, -timestamp, -signature), their secrets, delivery ids."""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import secrets
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from app.core.subscription import Subscription

ID_HEADER = "webhook-id"
TIMESTAMP_HEADER = "webhook-timestamp"
SIGNATURE_HEADER = "webhook-signature"
SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32  # Standard Webhooks asks for 24 to 64 random bytes
# How long a rotated-out secret still signs deliveries, so receivers can switch at leisure.
PREVIOUS_SECRET_OVERLAP = timedelta(hours=24)
TOLERANCE_S = 300  # what the standardwebhooks libraries accept between webhook-timestamp and their clock


def new_secret() -> str:
    """`whsec_` and the base64 of random bytes: the form every Standard Webhooks library takes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


@functools.lru_cache(maxsize=4096)
def key_of(secret: str) -> bytes:
    """The HMAC key of `secret`, derived as the standardwebhooks library derives it: the base64 after `whsec_`.

    Decoded as leniently as that library decodes (missing padding, characters outside base64
    skipped), so a receiver's `Webhook(secret)` always holds the same key. A secret it cannot
    decode at all (a topic file's `secret_env` may hold any text) is keyed by its UTF-8 bytes:
    such a receiver passes `secret.encode()` to `Webhook`.
    """
    encoded = secret.removeprefix(SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "==")
    except binascii.Error:
        key = b""
    return key or secret.encode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`: the id and time are signed too, against replays."""
    # hmac.digest: the one-shot form, a fifth of hmac.new's cost, on every attempt.
    digest = hmac.digest(key_of(secret), f"{message_id}.{timestamp}.".encode() + body, "sha256")
    return "v1," + base64.b64encode(digest).decode("ascii")


def signing_secrets(sub: Subscription, now: datetime) -> list[str]:
    """The current secret, and the previous one while its overlap after a rotation lasts."""
    assert sub.secret is not None  # only webhook subscriptions are signed
    found = [sub.secret]
    if sub.previous_secret is not None and sub.previous_secret_until is not None and now < sub.previous_secret_until:
        found.append(sub.previous_secret)
    return found


def headers(secrets_in_force: Sequence[str], message_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The Standard Webhooks headers of one attempt: one signature per secret, space-separated."""
    return {
        ID_HEADER: message_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: " ".join(sign(secret, message_id, timestamp, body) for secret in secrets_in_force),
    }


def verify(secret: str, received: Mapping[str, str], body: bytes, now: int, tolerance_s: int = TOLERANCE_S) -> bool:
    """What a receiver does: one of the signatures matches and the timestamp is recent."""
    lower = {name.lower(): value for name, value in received.items()}
    message_id, timestamp = lower.get(ID_HEADER, ""), lower.get(TIMESTAMP_HEADER, "")
    if not message_id or not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    expected = sign(secret, message_id, int(timestamp), body)
    given = lower.get(SIGNATURE_HEADER, "").split(" ")
    return any(hmac.compare_digest(expected.encode(), signature.encode()) for signature in given)


def delivery_id(subscription_key: str, topic: str, partition: int, offset: int) -> str:
    """Stable across retries, restarts and replays: receivers dedupe on it."""
    source = f"{subscription_key}/{topic}/{partition}/{offset}".encode()
    return "dlv_" + hashlib.sha256(source).hexdigest()[:32]
