"""Access tokens: HS256 JWTs issued for an API key by POST /login, verified back to that key's principal."""

from __future__ import annotations

import time
from dataclasses import dataclass

import jwt

from app.core.tenants import KeyRing, Principal
from app.errors import Unauthorized

ALGORITHM = "HS256"
DEFAULT_TTL_S = 3600
CLAIMS = ("sub", "tenant", "iat", "exp")
FIELD = "Authorization"


@dataclass(frozen=True, slots=True)
class Issued:
    """A signed access token and the instant it stops being accepted (epoch seconds)."""

    token: str
    expires_at: int


def issue(key_id: str, tenant: str, secret: str, *, ttl_s: int = DEFAULT_TTL_S, now: float | None = None) -> Issued:
    """A token for the key `key_id` of `tenant`, valid for `ttl_s` seconds from `now`."""
    issued_at = int(time.time() if now is None else now)
    expires_at = issued_at + ttl_s
    claims = {"sub": key_id, "tenant": tenant, "iat": issued_at, "exp": expires_at}
    return Issued(jwt.encode(claims, secret, algorithm=ALGORITHM), expires_at)


def verify(token: str, keyring: KeyRing, secret: str, *, now: float | None = None) -> Principal:
    """The principal of the key the token was issued for; Unauthorized naming why it is refused."""
    if not secret:
        raise _invalid("access tokens are off on this server (SLUICE_TOKEN_SECRET is not set); send the API key")
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
    except jwt.InvalidTokenError:
        raise _invalid("the access token is not a well-formed JWT") from None
    # Only the algorithm Sluice signs with: "none" would skip the signature, and others read the secret differently.
    if algorithm != ALGORITHM:
        raise _invalid(f"the access token's algorithm {algorithm!r} is not accepted; tokens are signed {ALGORITHM}")
    try:
        # exp is checked below, against the caller's clock (`now`); iat not at all, so that a producer
        # whose clock runs a little behind the one that issued the token still accepts it.
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],
            options={"require": list(CLAIMS), "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidSignatureError:
        raise _invalid("the access token's signature does not match; it was not issued by this server") from None
    except jwt.MissingRequiredClaimError as exc:
        raise _invalid(f"the access token lacks the {exc.claim!r} claim") from None
    except jwt.InvalidTokenError:
        raise _invalid("the access token is not a well-formed JWT") from None
    key_id, tenant, expires_at = claims["sub"], claims["tenant"], claims["exp"]
    if not isinstance(key_id, str) or not isinstance(tenant, str) or not isinstance(expires_at, int):
        raise _invalid("the access token's claims are not of the expected types")
    if expires_at <= (time.time() if now is None else now):
        raise Unauthorized(
            "the access token has expired; log in again with POST /login", field=FIELD, code="expired_token"
        )
    principal = keyring.principal_by_id(key_id)
    if principal is None:
        raise _invalid("the API key this access token was issued for is no longer valid")
    # A key moved to another tenant in the keys file must not keep speaking for the old one.
    if principal.tenant != tenant:
        raise _invalid("the access token's tenant is no longer its API key's tenant; log in again")
    return principal


def _invalid(message: str) -> Unauthorized:
    return Unauthorized(message, field=FIELD, code="invalid_token")
