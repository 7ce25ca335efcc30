"""Credentials as each client sends them: X-API-Key, Bearer, Basic with the key as user name, a bare key."""

import base64

import pytest

from app.core.credentials import Credential, presented
from app.errors import Unauthorized

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-api-key": "k1"}, Credential("k1")),
        ({"authorization": "Bearer k1"}, Credential("k1")),
        ({"authorization": "bearer   k1 "}, Credential("k1")),
        ({"authorization": basic("k1")}, Credential("k1")),
        ({"authorization": basic("", "k1")}, Credential("k1")),
        ({"authorization": "k1"}, Credential("k1")),
        ({"authorization": "sk_live.ab-c_d~"}, Credential("sk_live.ab-c_d~")),
        ({"authorization": f"Bearer {TOKEN}"}, Credential(TOKEN, is_token=True)),
        ({"authorization": TOKEN}, Credential(TOKEN, is_token=True)),
        ({"x-api-key": "k1", "authorization": "Bearer other"}, Credential("k1")),
        ({}, None),
        ({"x-api-key": " "}, None),
        ({"authorization": ""}, None),
    ],
)
def test_each_form_yields_the_key_or_token(headers: dict[str, str], expected: Credential | None) -> None:
    assert presented(headers) == expected


@pytest.mark.parametrize(
    "header",
    ["Basic !!!notbase64", "Basic " + base64.b64encode(b"no-colon").decode(), "Digest k1", "key with spaces,"],
)
def test_a_malformed_authorization_header_is_refused_naming_it(header: str) -> None:
    with pytest.raises(Unauthorized) as caught:
        presented({"authorization": header})
    assert (caught.value.field, caught.value.code) == ("Authorization", "invalid_authorization")
