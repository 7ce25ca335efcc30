"""Server-Sent Events with a standard SSE client (httpx-sse): a reconnect resumes from the stream's first id."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest
from httpx_sse import ServerSentEvent, aconnect_sse

from tests.support.stack import Stack

pytestmark = pytest.mark.integration
KEY = "sse_key"
HEADERS = {"X-API-Key": KEY}


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(kafka_bootstrap, tmp_path_factory.mktemp("sse"), api_keys=f"{KEY}:acme")
    await stack.start_producer()
    yield stack
    stack.stop()


async def first_event(client: httpx.AsyncClient, url: str, last_event_id: str | None = None) -> ServerSentEvent:
    headers = HEADERS if last_event_id is None else {**HEADERS, "Last-Event-ID": last_event_id}
    async with aconnect_sse(client, "GET", url, headers=headers) as source:
        async for event in source.aiter_sse():
            return event
    raise AssertionError("the stream ended before its first event")


async def test_a_client_that_saw_no_event_resumes_where_its_stream_began(stack: Stack) -> None:
    user = "u-" + uuid.uuid4().hex[:8]
    name = "sse-" + uuid.uuid4().hex[:8]
    async with httpx.AsyncClient(base_url=stack.url, timeout=30) as client:
        body = {"name": name, "stream": "events", "topic": "orders", "filter": {"users": [user]}}
        created = await client.post("/subscriptions", json=body, headers=HEADERS)
        assert created.status_code == 201, created.text
        url = f"/subscriptions/{name}/stream"
        # Connect, see nothing but the stream's opening, leave: what the client keeps is its id.
        opening = await first_event(client, url)
        assert opening.id, "the opening carries the stream's position as an id, which clients keep"
        assert opening.data == ""
        sent = []
        for n in range(3):
            posted = await client.post(
                "/topics/orders/events",
                json={"data": {"user_id": user, "n": n}, "metadata": {"type": "order_placed"}},
                headers=HEADERS,
            )
            assert posted.status_code in (200, 201), posted.text
            sent.append(posted.json()["id"])
        # Reconnect as an SSE client does, with the last id it stored: everything published while away comes.
        received: list[str] = []
        headers = {**HEADERS, "Last-Event-ID": opening.id}
        async with aconnect_sse(client, "GET", url, headers=headers) as source:
            async for event in source.aiter_sse():
                if event.data:
                    received.append(event.json()["id"])
                if len(received) == len(sent):
                    break
    assert received == sent
