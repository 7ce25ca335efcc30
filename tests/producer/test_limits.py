"""Input limits on the real broker: no depth of JSON and no integer gives a 5xx on any ingest route."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from app.core.json_text import MAX_DEPTH
from app.producer.ingest import INGEST_ROUTES
from tests.support.stack import Stack, read_until

pytestmark = pytest.mark.integration
KEY = "limits_key"
DEPTHS = [MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 254, 255, 300, 1023, 1024, 1025]


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(kafka_bootstrap, tmp_path_factory.mktemp("limits"), api_keys=f"{KEY}:acme")
    await stack.start_producer()
    yield stack
    stack.stop()


def nested(depth: int) -> bytes:
    """A body whose `data` nests {"a": ...} so the whole document is `depth` levels deep."""
    inner = depth - 1
    return b'{"data":' + b'{"a":' * (inner - 1) + b"{}" + b"}" * (inner - 1) + b', "metadata": {"type": "t"}}'


def content_type(path: str) -> str:
    return "application/cloudevents+json" if path.startswith("/cloudevents") else "application/json"


@pytest.mark.parametrize(("method", "path"), [(method, path) for method, path, _ in INGEST_ROUTES])
async def test_every_depth_is_answered_without_a_server_error(stack: Stack, method: str, path: str) -> None:
    url = stack.url + path.replace("{topic_slug}", "orders")
    headers = {"X-API-Key": KEY, "Content-Type": content_type(path)}
    async with aiohttp.ClientSession() as http:
        for depth in DEPTHS:
            async with http.request(method, url, data=nested(depth), headers=headers) as response:
                text = await response.text()
                assert response.status < 500, (depth, response.status, text)
                assert response.headers["Content-Type"].startswith("application/json"), (depth, text)
                if depth > MAX_DEPTH:
                    assert response.status == 400, (depth, text)
                    assert f"more than {MAX_DEPTH} levels" in text or "not valid JSON" in text, (depth, text)


async def test_a_refused_deep_body_is_kept_whole_on_the_dead_letter_topic(stack: Stack) -> None:
    body = nested(300).replace(b'"type": "t"', b'"type": "' + uuid.uuid4().hex.encode() + b'"')  # this test's own
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(stack.url + "/topics/orders/events", data=body, headers=headers) as response,
    ):
        answer = await response.json()
    assert (response.status, answer["error"]["code"]) == (400, "validation.too_deep")
    kept = await read_until(
        stack.bootstrap, stack.topic("dlq.acme"), lambda rs: any(r["body"] == body for r in rs), describe="the body"
    )
    assert [r["code"] for r in kept if r["body"] == body] == ["validation.too_deep"]


@pytest.mark.parametrize("number", [b"123456789012345678901234567890", b"-9223372036854775809"])
async def test_an_integer_that_would_change_is_refused_naming_its_field(stack: Stack, number: bytes) -> None:
    body = b'{"data": {"user_id": "u1", "n": ' + number + b'}, "metadata": {"type": "t"}}'
    headers = {"X-API-Key": KEY, "Content-Type": "application/json"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(stack.url + "/topics/orders/events", data=body, headers=headers) as response,
    ):
        answer = await response.json()
    assert response.status == 400
    assert (answer["error"]["field"], answer["error"]["code"]) == ("data.n", "validation.integer_range")
