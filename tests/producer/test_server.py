"""The producer's refusals on the real broker: clear JSON errors, and refused bodies kept."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.support.stack import Stack, read_until

pytestmark = pytest.mark.integration
KEY = "it_key_2"


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(
        kafka_bootstrap,
        tmp_path_factory.mktemp("producer"),
        api_keys=f"{KEY}:acme,other:beta",
        SLUICE_EFFECT_TIMEOUT_S="1",
    )
    await stack.start_producer()
    yield stack
    stack.stop()


async def send(
    stack: Stack, path: str, body: bytes, headers: dict[str, str], method: str = "POST"
) -> tuple[int, dict[str, Any], dict[str, str]]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, stack.url + path, data=body, headers=headers) as response,
    ):
        return response.status, await response.json(), dict(response.headers)


JSON = {"Content-Type": "application/json"}
GOOD = b'{"data": {"user_id": "u1"}}'


def basic(user: str, password: str = "") -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.mark.parametrize(
    ("headers", "code", "field"),
    [
        ({}, "missing_api_key", "X-API-Key"),
        ({"X-API-Key": "wrong"}, "invalid_api_key", "X-API-Key"),
        ({"Authorization": "Bearer wrong"}, "invalid_api_key", "X-API-Key"),
        ({"Authorization": "wrong"}, "invalid_api_key", "X-API-Key"),
        ({"Authorization": basic("wrong")}, "invalid_api_key", "X-API-Key"),
        ({"Authorization": f"Basic {KEY}"}, "invalid_authorization", "Authorization"),
        ({"Authorization": f"Digest {KEY}"}, "invalid_authorization", "Authorization"),
    ],
)
async def test_missing_unknown_or_malformed_credentials_are_401(
    stack: Stack, headers: dict[str, str], code: str, field: str
) -> None:
    status, body, response_headers = await send(stack, "/topics/orders/events", GOOD, {**JSON, **headers})
    assert status == 401
    assert (body["error"]["code"], body["error"]["field"]) == (code, field)
    assert "Bearer" in response_headers["WWW-Authenticate"]


@pytest.mark.parametrize(
    "headers",
    [
        {"X-API-Key": KEY},
        {"Authorization": f"Bearer {KEY}"},
        {"Authorization": KEY},
        {"Authorization": basic(KEY)},
    ],
)
async def test_the_key_is_taken_in_every_form_a_client_sends_it(stack: Stack, headers: dict[str, str]) -> None:
    status, body, _ = await send(stack, "/topics/orders/events", GOOD, {**JSON, **headers})
    assert status == 201, body
    assert body["id"].startswith("evt_")


@pytest.mark.parametrize("auth", [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}])
async def test_either_header_carries_the_key(stack: Stack, auth: dict[str, str]) -> None:
    status, body, _ = await send(stack, "/topics/orders/events", GOOD, {**JSON, **auth})
    assert status == 201
    assert body["id"].startswith("evt_")


async def test_unknown_topic_is_404_and_the_event_is_kept(stack: Stack) -> None:
    status, body, _ = await send(stack, "/topics/nope/events", GOOD, {**JSON, "X-API-Key": KEY})
    assert status == 404
    assert body["error"] == {"code": "topic_not_found", "message": "no topic named 'nope'", "field": "topic_slug"}
    await read_until(
        stack.bootstrap,
        stack.topic("dlq.acme"),
        lambda rs: any(r["code"] == "topic_not_found" and r["body"] == GOOD for r in rs),
        timeout=30,
        describe="dead letter of the unknown topic",
    )


async def test_unauthenticated_requests_are_not_kept(stack: Stack) -> None:
    payload = b'{"data": {"user_id": "anonymous-' + uuid.uuid4().hex.encode() + b'"}}'
    status, _, _ = await send(stack, "/topics/nope/events", payload, {**JSON, "X-API-Key": "wrong"})
    assert status == 401
    # A later refusal from a real tenant is kept; by then the anonymous one would be there too.
    marker = b'{"data": "' + uuid.uuid4().hex.encode() + b'"}'
    await send(stack, "/topics/orders/events", marker, {**JSON, "X-API-Key": KEY})
    letters = await read_until(
        stack.bootstrap, stack.topic("dlq.acme"), lambda rs: any(r["body"] == marker for r in rs), timeout=30
    )
    assert all(r["body"] != payload for r in letters)


async def test_unknown_route_is_a_json_404(stack: Stack) -> None:
    status, body, _ = await send(stack, "/nowhere", b"", {}, method="GET")
    assert status == 404
    assert body["error"] == {"code": "not_found", "message": "no route for GET /nowhere"}


async def test_wrong_method_is_a_json_405_with_allow(stack: Stack) -> None:
    status, body, headers = await send(stack, "/topics/orders/events", b"", {}, method="GET")
    assert status == 405
    assert body["error"]["code"] == "method_not_allowed"
    assert headers["Allow"] == "POST"


@pytest.mark.parametrize(
    ("payload", "headers", "status", "field", "reason"),
    [
        (b'{"data": {', JSON, 400, "body", "not valid JSON"),
        (b"", JSON, 400, "body", "empty"),
        (b'{"data": "x"}', JSON, 400, "data", "must be a JSON object"),
        (b'{"metadata": {}}', JSON, 400, "data", "is required"),
        (b'{"data": {}}', JSON, 400, "data.user_id", "user id is required"),
        (b'{"data": {"user_id": "u"}, "send_at": "soon"}', JSON, 400, "send_at", "RFC 3339"),
        (GOOD, {"Content-Type": "text/plain"}, 415, "Content-Type", "application/json"),
        (b'{"data": {"user_id": "' + b"x" * 2_000_000 + b'"}}', JSON, 413, "body", "larger than"),
    ],
)
async def test_bad_body_gets_a_reason_and_is_dead_lettered(
    stack: Stack, payload: bytes, headers: dict[str, str], status: int, field: str, reason: str
) -> None:
    got, body, _ = await send(stack, "/topics/orders/events", payload, {**headers, "X-API-Key": KEY})
    assert got == status
    assert body["error"]["field"] == field
    assert reason in body["error"]["message"]

    code = body["error"]["code"]
    kept_body = b"" if status == 413 else payload  # an over-size body is refused before it is read

    def kept(records: list[dict[str, Any]]) -> bool:
        return any((r["code"], r["field"], r["body"]) == (code, field, kept_body) for r in records)

    letters = await read_until(stack.bootstrap, stack.topic("dlq.acme"), kept, timeout=30, describe="dead letter")
    letter = next(r for r in letters if (r["code"], r["field"], r["body"]) == (code, field, kept_body))
    assert letter["tenant"] == "acme"
    assert letter["stage"] == "producer"
    assert letter["source"] == "POST /topics/{topic_slug}/events"
    assert letter["message"] == body["error"]["message"]


async def test_gamification_answers_202_when_no_effect_comes_in_time(stack: Stack) -> None:
    # This stack runs no worker: the event is accepted (in Kafka), its effect cannot come.
    body = b'{"event_id": "no-worker-1", "user_id": "u", "type": "lesson_completed"}'
    status, answer, _ = await send(stack, "/api/v1/events", body, {**JSON, "X-API-Key": KEY})
    assert (status, answer) == (202, {"status": "accepted", "event_id": "no-worker-1"})


async def test_rules_simulate_answers_effects_and_refuses_with_a_reason(stack: Stack) -> None:
    body = b'{"topic": "orders", "events": [{"type": "orders"}, {"type": "refund"}]}'
    status, answer, _ = await send(stack, "/rules/simulate", body, {**JSON, "X-API-Key": KEY})
    assert status == 200
    assert [e["totals"]["counters"]["orders"] for e in answer["effects"]] == [1, 2]
    status, answer, _ = await send(stack, "/rules/simulate", b'{"topic": "orders"}', {**JSON, "X-API-Key": KEY})
    assert (status, answer["error"]["field"]) == (400, "events")
    status, _, _ = await send(stack, "/rules/simulate", body, JSON)
    assert status == 401
