"""Segment's analytics-python, unmodified and configured with only host and write key, against a real producer."""

from __future__ import annotations

import asyncio
import os
import re
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from segment.analytics.client import Client
from segment.analytics.request import APIError, post

from tests.clients.calls import send_every_call
from tests.support.stack import REPO, Stack, read_until

pytestmark = pytest.mark.integration
WRITE_KEY = "wk_1"


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(kafka_bootstrap, tmp_path_factory.mktemp("segment"), api_keys=f"{WRITE_KEY}:acme")
    await stack.start_producer()
    yield stack
    stack.stop()


async def events_of(stack: Stack, ids: set[str]) -> dict[str, dict[str, Any]]:
    records = await read_until(
        stack.bootstrap,
        stack.topic("events.segment"),
        lambda rs: ids <= {r["id"] for r in rs},
        describe=f"{len(ids)} events",
    )
    return {r["id"]: r for r in records if r["id"] in ids}


async def test_a_batch_of_every_call_type_lands_on_the_segment_topic(stack: Stack) -> None:
    user = "user-" + uuid.uuid4().hex[:8]
    sent = await asyncio.to_thread(send_every_call, Client(WRITE_KEY, host=stack.url), user)
    events = await events_of(stack, {message["messageId"] for message in sent})
    got = [events[message["messageId"]] for message in sent]
    assert [event["type"] for event in got] == ["Signed Up", "identify", "page", "screen", "group", "alias"]
    assert {(event["tenant"], event["user_id"], event["dialect"]) for event in got} == {("acme", user, "segment")}
    data = [orjson.loads(event["data"]) for event in got]
    assert data[0]["properties"] == {"plan": "pro"}
    assert data[1]["traits"] == {"email": f"{user}@example.com"}
    assert data[3] == {
        "type": "screen",
        "name": "Settings",
        "category": "App",
        "properties": {"tab": 2},
        "userId": user,
    }
    assert (data[4]["groupId"], data[5]["previousId"]) == ("group-1", "anon-" + user)
    metadata = orjson.loads(got[0]["metadata"])
    assert metadata["context"]["library"]["name"] == "analytics-python"
    assert metadata["integrations"] == {}
    assert all(event["sent_at"] is not None for event in got)  # sentAt of the batch: clock skew corrected
    assert not any(WRITE_KEY in event["metadata"] for event in got)  # the write key in the body is not kept


async def test_the_answer_is_segments_and_a_bad_call_is_dropped_alone_and_dead_lettered(stack: Stack) -> None:
    user = "user-" + uuid.uuid4().hex[:8]
    good = {"type": "track", "userId": user, "event": "Kept", "messageId": "m-good-" + user}
    bad = {"type": "track", "userId": user, "messageId": "m-bad-" + user}  # no event
    # The library's own request function, with a batch its client would never build.
    response = await asyncio.to_thread(
        post, WRITE_KEY, stack.url, batch=[good, bad], context={"device": {"type": "server"}}
    )
    answer = response.json()
    assert (response.status_code, answer["success"]) == (200, True)
    assert [(r["index"], r["field"], r["code"]) for r in answer["rejected"]] == [(1, "event", "validation.required")]
    kept = await events_of(stack, {good["messageId"]})
    assert orjson.loads(kept[good["messageId"]]["metadata"])["context"] == {"device": {"type": "server"}}
    letters = await read_until(
        stack.bootstrap,
        stack.topic("dlq.acme"),
        lambda rs: any(bad["messageId"].encode() in r["body"] for r in rs),
        describe="the refused call",
    )
    (letter,) = [r for r in letters if bad["messageId"].encode() in r["body"]]
    assert orjson.loads(letter["body"]) == bad
    assert (letter["field"], letter["code"]) == ("event", "validation.required")


async def test_each_single_call_route_as_segments_http_api_documents_it(stack: Stack) -> None:
    """POST /v1/<type> with the write key as Basic user name and in the body, as Segment's own examples send it."""
    user = "user-" + uuid.uuid4().hex[:8]
    fields = {
        "track": {"event": "Signed Up"},
        "identify": {"traits": {"plan": "pro"}},
        "page": {"name": "Home"},
        "screen": {"name": "Settings"},
        "group": {"groupId": "group-1"},
        "alias": {"previousId": "anon-" + user},
    }
    auth = aiohttp.BasicAuth(WRITE_KEY, "")
    async with aiohttp.ClientSession(auth=auth) as http:
        for kind, extra in fields.items():
            body = {"userId": user, "messageId": f"m-{kind}-{user}", "writeKey": WRITE_KEY, **extra}
            async with http.post(f"{stack.url}/v1/{kind}", json=body) as response:
                assert (response.status, await response.json()) == (200, {"success": True}), kind
    events = await events_of(stack, {f"m-{kind}-{user}" for kind in fields})
    assert {events[f"m-{kind}-{user}"]["type"] for kind in fields} == {"Signed Up", *list(fields)[1:]}


async def test_a_wrong_write_key_is_refused_401_with_the_reason(stack: Stack) -> None:
    client = Client("wk_wrong", host=stack.url, sync_mode=True)  # sync: the library raises what it got
    with pytest.raises(APIError) as caught:
        await asyncio.to_thread(client.track, "user-1", "Signed Up")
    assert (caught.value.status, caught.value.code) == (401, "invalid_api_key")


def snippets() -> list[str]:
    """The Python blocks of the Segment section of docs/keep-your-sdk.md."""
    text = (REPO / "docs" / "keep-your-sdk.md").read_text()
    section = text.split("## Segment: analytics-python and RudderStack", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.DOTALL)


@pytest.mark.parametrize(("index", "integrations"), [(0, {}), (1, {"All": True})], ids=["segment", "rudderstack"])
async def test_the_documented_snippets_work_as_they_stand(stack: Stack, index: int, integrations: Any) -> None:
    code = snippets()[index].replace("http://localhost:8080", stack.url)
    env = {**os.environ, "SEGMENT_WRITE_KEY": WRITE_KEY, "RUDDERSTACK_WRITE_KEY": WRITE_KEY}
    process = await asyncio.create_subprocess_exec(sys.executable, "-c", code, env=env)
    assert await asyncio.wait_for(process.wait(), 60) == 0

    def landed(records: list[dict[str, Any]]) -> bool:
        return any(
            r["user_id"] == "user_42"
            and r["type"] == "Signed Up"
            and orjson.loads(r["metadata"])["integrations"] == integrations
            for r in records
        )

    await read_until(stack.bootstrap, stack.topic("events.segment"), landed, describe="the snippet's track call")
