"""What a request presents as its credentials, in each form the clients Sluice speaks with send them."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass

from app.errors import Unauthorized

# A JWT is three base64url parts; its header always starts '{"' and so encodes to "eyJ".
JWT = re.compile(r"eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
BARE = re.compile(r"[A-Za-z0-9_.~+/=-]+")  # a key sent without a scheme: one token, no spaces


@dataclass(frozen=True, slots=True)
class Credential:
    """A presented API key, or an access token (a JWT from POST /login)."""

    value: str
    is_token: bool = False


def presented(headers: Mapping[str, str]) -> Credential | None:
    """The credential in `headers` (looked up by lower-case name: a request's own case-insensitive
    headers, or a dict with lower-case keys), or None when there is none.

    Accepted: `X-API-Key: <key>`; `Authorization: Bearer <key or access token>`;
    `Authorization: Basic base64(<key>:)` (the key as user name, as Segment's libraries send a
    write key); `Authorization: <key>` with no scheme (the pub/sub vendor's SDK). Anything else
    in `Authorization` is refused rather than ignored, so a client learns its header is wrong.
    """
    key = headers.get("x-api-key")
    if key is not None:
        return Credential(key.strip()) if key.strip() else None
    header = headers.get("authorization", "").strip()
    if not header:
        return None
    scheme, _, rest = header.partition(" ")
    rest = rest.strip()
    if not rest:
        if BARE.fullmatch(scheme):
            return Credential(scheme, is_token=JWT.fullmatch(scheme) is not None)
        raise _malformed("is neither a scheme and a credential nor a bare key")
    if scheme.lower() == "bearer":
        return Credential(rest, is_token=JWT.fullmatch(rest) is not None)
    if scheme.lower() == "basic":
        return Credential(_basic_user(rest))
    raise _malformed(f"uses the scheme {scheme!r}; send Bearer, Basic or the bare key")


def _basic_user(encoded: str) -> str:
    try:
        decoded = base64.b64decode(encoded, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _malformed("Basic credentials are not base64 of 'user:password'") from None
    user, sep, password = decoded.partition(":")
    if not sep:
        raise _malformed("Basic credentials are not base64 of 'user:password'")
    # The key is the user name; a client that puts it in the password instead still gets in.
    return user or password


def _malformed(reason: str) -> Unauthorized:
    return Unauthorized(f"the Authorization header {reason}", field="Authorization", code="invalid_authorization")
