"""RudderStack's rudder-sdk-python, unmodified and configured with only host and write key, against a real producer."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from rudderstack.analytics.client import Client
from rudderstack.analytics.request import APIError

from tests.clients.calls import send_every_call
from tests.support.stack import Stack, read_until

pytestmark = pytest.mark.integration
WRITE_KEY = "wk_1"


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(kafka_bootstrap, tmp_path_factory.mktemp("rudder"), api_keys=f"{WRITE_KEY}:acme")
    await stack.start_producer()
    yield stack
    stack.stop()


async def test_a_gzipped_batch_of_every_call_type_lands_on_the_segment_topic(stack: Stack) -> None:
    user = "user-" + uuid.uuid4().hex[:8]
    sent = await asyncio.to_thread(send_every_call, Client(WRITE_KEY, host=stack.url), user)
    ids = {message["messageId"] for message in sent}
    records = await read_until(
        stack.bootstrap, stack.topic("events.segment"), lambda rs: ids <= {r["id"] for r in rs}, describe="6 events"
    )
    events = {r["id"]: r for r in records}
    got = [events[message["messageId"]] for message in sent]
    assert [event["type"] for event in got] == ["Signed Up", "identify", "page", "screen", "group", "alias"]
    assert {(event["tenant"], event["user_id"], event["dialect"]) for event in got} == {("acme", user, "segment")}
    data = [orjson.loads(event["data"]) for event in got]
    assert data[3] == {
        "type": "screen",
        "name": "Settings",
        "category": "App",
        "properties": {"tab": 2},
        "userId": user,
    }
    metadata = [orjson.loads(event["metadata"]) for event in got]
    # RudderStack sends identify traits in the context, and integrations {"All": true} by default.
    assert metadata[1]["context"]["traits"] == {"email": f"{user}@example.com"}
    assert all(m["integrations"] == {"All": True} for m in metadata)
    assert metadata[0]["context"]["library"]["name"] == "analytics-python"


async def test_a_wrong_write_key_is_refused_401_with_the_reason(stack: Stack) -> None:
    client = Client("wk_wrong", host=stack.url, sync_mode=True)  # sync: the library raises what it got
    with pytest.raises(APIError) as caught:
        await asyncio.to_thread(client.track, "user-1", "Signed Up")
    assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")
