"""Access tokens verify back to their key's principal, and every other token is refused with the reason."""

from __future__ import annotations

import base64
import json
from typing import Any

import jwt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.core import tokens
from app.core.credentials import JWT
from app.core.tenants import KeyRing, Principal, hash_key, key_id
from app.errors import Unauthorized

SECRET = "s" * 32
NOW = 1_800_000_000
ACME = Principal("acme")
LIMITED = Principal("beta", frozenset({"orders"}))
RING = KeyRing({hash_key("acme-key"): ACME, hash_key("beta-key"): LIMITED})
ACME_ID = key_id(hash_key("acme-key"))


def claims(**changes: Any) -> dict[str, Any]:
    return {"sub": ACME_ID, "tenant": "acme", "iat": NOW, "exp": NOW + 3600, **changes}


def refused(token: str, *, ring: KeyRing = RING, now: float = NOW + 1, secret: str = SECRET) -> Unauthorized:
    with pytest.raises(Unauthorized) as caught:
        tokens.verify(token, ring, secret, now=now)
    assert caught.value.field == "Authorization"
    return caught.value


def b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def test_a_token_verifies_back_to_its_keys_principal() -> None:
    issued = tokens.issue(ACME_ID, "acme", SECRET, now=NOW)
    assert issued.expires_at == NOW + tokens.DEFAULT_TTL_S
    assert JWT.fullmatch(issued.token)  # what the credential parser takes for a token
    assert tokens.verify(issued.token, RING, SECRET, now=NOW + 1) == RING.principal_for("acme-key")
    assert (
        jwt.decode(issued.token, SECRET, algorithms=["HS256"], options={"verify_exp": False, "verify_iat": False})
        == claims()
    )


def test_a_topic_limited_keys_token_keeps_the_limit() -> None:
    token = tokens.issue(key_id(hash_key("beta-key")), "beta", SECRET, now=NOW).token
    assert tokens.verify(token, RING, SECRET, now=NOW + 1) == RING.principal_for("beta-key")


def test_a_forged_signature_is_refused() -> None:
    forged = jwt.encode(claims(), "another secret, just as long as ours", algorithm="HS256")
    error = refused(forged)
    assert error.code == "invalid_token" and "signature" in error.message


def test_a_token_with_its_claims_edited_is_refused() -> None:
    header, _, signature = tokens.issue(ACME_ID, "acme", SECRET, now=NOW).token.split(".")
    edited = f"{header}.{b64(claims(exp=NOW + 10**9))}.{signature}"
    assert "signature" in refused(edited).message


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_alg_none_token_is_refused(alg: str) -> None:
    unsigned = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(claims())}."
    error = refused(unsigned)
    assert error.code == "invalid_token" and repr(alg) in error.message


def test_a_token_signed_with_another_algorithm_is_refused() -> None:
    error = refused(jwt.encode(claims(), SECRET * 2, algorithm="HS512"))
    assert "'HS512'" in error.message


def test_an_expired_token_is_refused() -> None:
    token = tokens.issue(ACME_ID, "acme", SECRET, ttl_s=60, now=NOW).token
    assert tokens.verify(token, RING, SECRET, now=NOW + 59) == RING.principal_for("acme-key")
    error = refused(token, now=NOW + 60)
    assert error.code == "expired_token" and "POST /login" in error.message


def test_a_token_of_a_removed_key_is_refused() -> None:
    token = tokens.issue(ACME_ID, "acme", SECRET, now=NOW).token
    without = KeyRing({hash_key("beta-key"): LIMITED})
    error = refused(token, ring=without)
    assert error.code == "invalid_token" and "no longer valid" in error.message


def test_a_token_naming_another_tenant_than_its_keys_is_refused() -> None:
    # Signed by us, but the key now belongs to acme: it must not speak for beta.
    token = tokens.issue(ACME_ID, "beta", SECRET, now=NOW).token
    error = refused(token)
    assert error.code == "invalid_token" and "tenant" in error.message


def test_another_keys_token_cannot_be_rebound_to_acme() -> None:
    beta_token = tokens.issue(key_id(hash_key("beta-key")), "acme", SECRET, now=NOW).token
    assert "tenant" in refused(beta_token).message


@pytest.mark.parametrize("missing", ["sub", "tenant", "exp", "iat"])
def test_a_token_without_a_claim_is_refused(missing: str) -> None:
    partial = {name: value for name, value in claims().items() if name != missing}
    error = refused(jwt.encode(partial, SECRET, algorithm="HS256"))
    assert repr(missing) in error.message


def test_claims_of_the_wrong_type_are_refused() -> None:
    assert "types" in refused(jwt.encode(claims(tenant=["acme"]), SECRET, algorithm="HS256")).message


def test_no_secret_no_tokens() -> None:
    token = tokens.issue(ACME_ID, "acme", SECRET, now=NOW).token
    assert "SLUICE_TOKEN_SECRET" in refused(token, secret="").message


@given(st.one_of(st.text(), st.from_regex(JWT, fullmatch=True)))
def test_whatever_is_sent_as_a_token_is_a_401(token: str) -> None:
    with pytest.raises(Unauthorized):
        tokens.verify(token, RING, SECRET, now=NOW)
