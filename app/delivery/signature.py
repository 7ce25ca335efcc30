"""Webhook signatures: `Sluice-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "t.body">`, and delivery ids."""

from __future__ import annotations

import hashlib
import hmac
import secrets

HEADER = "Sluice-Signature"
SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The header value for `body` sent at `timestamp`; the timestamp is signed too, against replays."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, header: str, body: bytes, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver does: the signature matches and the timestamp is recent."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    timestamp = fields.get("t", "")
    if not timestamp.isdigit() or abs(now - int(timestamp)) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, int(timestamp), body), f"t={timestamp},v1={fields.get('v1', '')}")


def delivery_id(subscription_key: str, topic: str, partition: int, offset: int) -> str:
    """Stable across retries, restarts and replays: receivers dedupe on it."""
    source = f"{subscription_key}/{topic}/{partition}/{offset}".encode()
    return "dlv_" + hashlib.sha256(source).hexdigest()[:32]
