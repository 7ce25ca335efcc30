"""The usage/billing vendor's SDK, vayu-py, unmodified against a real producer: login, send, dry-run."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
from aiohttp.test_utils import TestClient, TestServer
from openapi.exceptions import UnauthorizedException
from vayu_sdk import Vayu

from app.core import tokens
from app.core.tenants import KeyRing, hash_key, key_id
from app.deployment import Deployment
from app.producer.app import create_app
from app.producer.http import Context
from app.producer.publisher import Publisher
from app.settings import Settings
from tests.support.stack import REPO, Stack, read_until, unique

pytestmark = pytest.mark.integration
KEY = "vayu_key_1"
LIMITED_KEY = "vayu_orders_only"  # in the keys file, limited to the orders topic
SECRET = "test-secret-" + "x" * 32
JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("vayu")
    keys = workdir / "keys.yaml"
    keys.write_text(f"keys:\n  - sha256: {hash_key(LIMITED_KEY)}\n    tenant: acme\n    topics: [orders]\n")
    stack = Stack.create(
        kafka_bootstrap,
        workdir,
        api_keys=f"{KEY}:acme,other_key:beta",
        SLUICE_KEYS_FILE=str(keys),
        SLUICE_TOKEN_SECRET=SECRET,
    )
    await stack.start_producer()
    yield stack
    stack.stop()


def usage_event(ref: str, customer: str = "customer-123", **changes: Any) -> dict[str, Any]:
    return {
        "name": "api_call",
        "timestamp": datetime.now(UTC),
        "customerAlias": customer,
        "ref": ref,
        "data": {"endpoint": "/users", "method": "GET"},
        **changes,
    }


async def call(
    stack: Stack, method: str, path: str, body: Any, headers: dict[str, str]
) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, stack.url + path, data=data, headers={**JSON, **headers}) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


async def login(stack: Stack, key: str) -> str:
    status, body, _ = await call(stack, "POST", "/login", {"refreshToken": key}, {})
    assert status == 200, body
    token: str = body["accessToken"]
    return token


async def usage_ids(stack: Stack, wanted: set[str]) -> set[str]:
    """Read the usage topic until every id in `wanted` is there; every id read by then."""
    records = await read_until(
        stack.bootstrap,
        stack.topic("events.usage"),
        lambda rs: wanted <= {r["id"] for r in rs},
        timeout=30,
        describe=f"usage events {sorted(wanted)}",
    )
    return {r["id"] for r in records}


# The SDK itself.


async def test_the_sdk_logs_in_and_sends_usage_events(stack: Stack) -> None:
    good = [usage_event(unique("ref")), usage_event(unique("ref"), customer="customer-456")]
    late = usage_event(unique("late"), timestamp=datetime.now(UTC) + timedelta(days=2))
    vayu = Vayu(api_key=KEY, host=stack.url)

    result = await asyncio.to_thread(vayu.events.send, events=[*good, late])

    assert [e.ref for e in result.valid_events] == [e["ref"] for e in good]
    (invalid,) = result.invalid_events
    assert invalid.event.ref == late["ref"]
    assert invalid.error == "timestamp: is more than 24 h in the future"
    # It spoke with an access token of the key's tenant, not with the key.
    token = vayu._Vayu__client.access_token
    assert jwt.decode(token, SECRET, algorithms=["HS256"])["tenant"] == "acme"

    written = await usage_ids(stack, {e["ref"] for e in good})
    assert late["ref"] not in written


async def test_the_sdk_dry_run_validates_and_writes_nothing(stack: Stack) -> None:
    customer = unique("dry")  # one user: one partition, so the marker is read after a dry-run event would be
    dry = usage_event(unique("dry"), customer=customer)
    dry_bad = usage_event(unique("dry-bad"), customer=customer, name="x" * 300)
    vayu = Vayu(api_key=KEY, host=stack.url)

    result = await asyncio.to_thread(vayu.events.dry_run, events=[dry, dry_bad])

    (checked,) = result.events
    assert (checked.event.ref, checked.event.customer_alias, checked.event.name) == (dry["ref"], customer, "api_call")
    assert checked.meter_with_values == []
    assert [e["ref"] for e in result.additional_properties["validEvents"]] == [dry["ref"]]
    (invalid,) = result.additional_properties["invalidEvents"]
    assert (invalid["event"]["ref"], invalid["error"]) == (dry_bad["ref"], "name: must be at most 256 characters")

    # A refused login (it holds the key), then a real send of the same user with a refused event of its own.
    status, _, _ = await call(stack, "POST", "/login", {"refreshToken": KEY, "password": "x"}, {})
    assert status == 400
    marker, marker_bad = usage_event(unique("marker"), customer=customer), usage_event(unique("bad"), name="x" * 300)
    sent = await asyncio.to_thread(vayu.events.send, events=[marker, marker_bad])
    assert [e.ref for e in sent.valid_events] == [marker["ref"]]
    assert dry["ref"] not in await usage_ids(stack, {marker["ref"]})
    letters = await read_until(
        stack.bootstrap,
        stack.topic("dlq.acme"),
        lambda rs: any(marker_bad["ref"].encode() in r["body"] for r in rs),
        timeout=30,
        describe="dead letter of the refused event",
    )
    assert not any(dry_bad["ref"].encode() in r["body"] for r in letters)
    assert not any(KEY.encode() in r["body"] for r in letters)  # login bodies are never kept


async def test_the_sdk_logs_in_again_when_its_token_is_refused(stack: Stack) -> None:
    vayu = Vayu(api_key=KEY, host=stack.url)
    client = vayu._Vayu__client
    await asyncio.to_thread(vayu.events.send, events=[usage_event(unique("ref"))])
    # A token this server did not sign, but which the SDK still believes valid for an hour.
    client.auth._access_token = jwt.encode({"exp": int(time.time()) + 3600}, "not our secret" * 4, "HS256")
    result = await asyncio.to_thread(vayu.events.send, events=[usage_event(unique("ref"))])
    assert len(result.valid_events) == 1
    assert jwt.decode(client.access_token, SECRET, algorithms=["HS256"])["tenant"] == "acme"


async def test_a_wrong_key_fails_the_sdks_login(stack: Stack) -> None:
    vayu = Vayu(api_key="not-a-key", host=stack.url)
    with pytest.raises(UnauthorizedException) as caught:
        await asyncio.to_thread(vayu.events.send, events=[usage_event(unique("ref"))])
    assert caught.value.status == 401


# Tokens over plain HTTP.


async def test_a_token_works_on_an_ingest_route(stack: Stack) -> None:
    token = await login(stack, KEY)
    status, body, _ = await call(
        stack, "POST", "/topics/orders/events", {"data": {"user_id": "u1"}}, {"Authorization": f"Bearer {token}"}
    )
    assert status in (200, 201), body
    assert body["id"].startswith("evt_")


async def test_login_answers_the_token_and_its_lifetime(stack: Stack) -> None:
    status, body, _ = await call(stack, "POST", "/login", {"refreshToken": KEY}, {})
    assert status == 200
    assert body["expiresIn"] == 3600
    claims = jwt.decode(body["accessToken"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == key_id(hash_key(KEY)) and claims["tenant"] == "acme"
    assert claims["exp"] - claims["iat"] == 3600


async def test_a_topic_limited_keys_token_keeps_the_limit(stack: Stack) -> None:
    token = {"Authorization": f"Bearer {await login(stack, LIMITED_KEY)}"}
    status, _, _ = await call(stack, "POST", "/topics/orders/events", {"data": {"user_id": "u1"}}, token)
    assert status in (200, 201)
    status, body, _ = await call(stack, "POST", "/events", {"events": [{"name": "x"}]}, token)
    assert (status, body["error"]["code"]) == (403, "topic_forbidden")


def b64(part: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(part).encode()).rstrip(b"=").decode()


def acme_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": key_id(hash_key(KEY)), "tenant": "acme", "iat": now, "exp": now + 3600, **changes}


@pytest.mark.parametrize(
    ("token", "code", "reason"),
    [
        (jwt.encode(acme_claims(), "forged: " + SECRET, "HS256"), "invalid_token", "signature"),
        (tokens.issue(key_id(hash_key(KEY)), "acme", SECRET, now=time.time() - 7200).token, "expired_token", "expired"),
        (f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(acme_claims())}.", "invalid_token", "'none'"),
        (tokens.issue(key_id(hash_key("gone")), "acme", SECRET).token, "invalid_token", "no longer valid"),
    ],
    ids=["forged", "expired", "alg-none", "removed-key"],
)
async def test_a_bad_token_is_a_401_naming_the_reason(stack: Stack, token: str, code: str, reason: str) -> None:
    usage = {"events": [{"name": "api_call", "timestamp": "2026-04-14T12:00:00Z", "customerAlias": "c", "ref": "r"}]}
    for path, body in (("/topics/orders/events", {"data": {"user_id": "u1"}}), ("/events", usage)):
        status, answer, headers = await call(stack, "POST", path, body, {"Authorization": f"Bearer {token}"})
        assert status == 401, answer
        assert (answer["error"]["code"], answer["error"]["field"]) == (code, "Authorization")
        assert reason in answer["error"]["message"]
        assert "Bearer" in headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        ({}, 400, "validation.required", "refreshToken"),
        ({"refreshToken": None}, 400, "validation.required", "refreshToken"),
        ({"refreshToken": 42}, 400, "validation.type", "refreshToken"),
        ({"refreshToken": ""}, 400, "validation.required", "refreshToken"),
        ({"refreshToken": KEY, "password": "x"}, 400, "validation.unknown", "password"),
        ([KEY], 400, "validation.type", "body"),
        (b"{", 400, "malformed_body", "body"),
        ({"refreshToken": "nope"}, 401, "invalid_api_key", "refreshToken"),
    ],
)
async def test_a_bad_login_names_the_field(stack: Stack, body: Any, status: int, code: str, field: str) -> None:
    got, answer, _ = await call(stack, "POST", "/login", body, {})
    assert got == status, answer
    assert (answer["error"]["code"], answer["error"]["field"]) == (code, field)


async def test_login_refuses_a_body_that_is_not_json(stack: Stack) -> None:
    status, answer, _ = await call(stack, "POST", "/login", b"refreshToken=x", {"Content-Type": "text/plain"})
    assert (status, answer["error"]["field"]) == (415, "Content-Type")


async def test_without_a_secret_login_is_a_503_naming_the_setting(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"SLUICE_TOPICS_DIR": str(REPO / "topics"), "SLUICE_SCHEMAS_DIR": str(REPO / "schemas")}
    )
    deployment = Deployment.load(settings)
    publisher = Publisher("127.0.0.1:1", dead_letter_schema=deployment.schemas["dead_letter"], timeout_s=1)
    app = create_app(Context(deployment, KeyRing.from_sources(f"{KEY}:acme", None), publisher))
    async with TestClient(TestServer(app)) as client:
        response = await client.post("/login", json={"refreshToken": KEY})
        assert response.status == 503
        assert "Retry-After" not in response.headers
        assert (await response.json())["error"]["field"] == "SLUICE_TOKEN_SECRET"
        token = tokens.issue(key_id(hash_key(KEY)), "acme", SECRET).token
        response = await client.post("/topics/orders/events", headers={"Authorization": f"Bearer {token}"}, json={})
        assert response.status == 401
        assert "SLUICE_TOKEN_SECRET" in (await response.json())["error"]["message"]
