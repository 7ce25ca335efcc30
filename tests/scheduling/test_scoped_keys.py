"""A key limited to some topics reaches no other topic through the scheduling and wait group routes."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from app.core.tenants import hash_key
from tests.support.stack import Stack, read_raw_until

pytestmark = pytest.mark.integration
FULL, LIMITED = "scope_full", "scope_usage_only"


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("scoped")
    keys = workdir / "keys.yaml"
    keys.write_text(f"keys:\n  - {{sha256: {hash_key(LIMITED)}, tenant: acme, topics: [usage]}}\n")
    stack = Stack.create(kafka_bootstrap, workdir, api_keys=f"{FULL}:acme", SLUICE_KEYS_FILE=str(keys))
    await stack.start_producer()
    yield stack
    stack.stop()


async def call(stack: Stack, method: str, path: str, body: Any = None, *, key: str) -> tuple[int, Any]:
    async with (
        aiohttp.ClientSession() as http,
        http.request(method, stack.url + path, json=body, headers={"X-API-Key": key}) as response,
    ):
        return response.status, await response.json()


async def schedule(stack: Stack, topic: str) -> str:
    """An event of `topic` due in an hour, published with the full key."""
    send_at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    body = {"data": {"user_id": "u1"}, "metadata": {"type": "order_placed"}, "send_at": send_at}
    status, answer = await call(stack, "POST", f"/topics/{topic}/events", body, key=FULL)
    assert status in (200, 201), answer
    event_id: str = answer["id"]
    return event_id


async def test_scheduled_events_of_other_topics_are_neither_listed_nor_cancelled(stack: Stack) -> None:
    orders, usage = await schedule(stack, "orders"), await schedule(stack, "usage")
    status, answer = await call(stack, "GET", "/scheduled", key=LIMITED)
    listed = {s["id"] for s in answer["scheduled"]}
    assert status == 200
    assert usage in listed
    assert orders not in listed
    status, answer = await call(stack, "GET", "/scheduled?topic=orders", key=LIMITED)
    assert (status, answer["error"]["code"], answer["error"]["field"]) == (403, "topic_forbidden", "topic")
    status, answer = await call(stack, "DELETE", f"/scheduled/{orders}?topic=orders", key=LIMITED)
    assert (status, answer["error"]["field"]) == (403, "topic")
    status, answer = await call(stack, "DELETE", f"/scheduled/{orders}", key=LIMITED)
    assert (status, answer["error"]["field"]) == (403, "event_id")
    status, answer = await call(stack, "GET", "/scheduled?topic=orders", key=FULL)
    assert orders in {s["id"] for s in answer["scheduled"]}  # still pending: nothing was cancelled


async def test_a_wait_group_on_other_topics_is_neither_made_shown_nor_started(stack: Stack) -> None:
    body = {"topics": {"usage": 1}, "target_topic": "orders", "timeout_s": 1}
    status, answer = await call(stack, "POST", "/wait-groups", body, key=LIMITED)
    assert (status, answer["error"]["field"]) == (403, "target_topic")
    status, group = await call(stack, "POST", "/wait-groups", body, key=FULL)
    assert status == 201, group
    status, answer = await call(stack, "GET", f"/wait-groups/{group['id']}", key=LIMITED)
    assert (status, answer["error"]["code"], answer["error"]["field"]) == (403, "topic_forbidden", "group_id")
    user = "chosen-" + uuid.uuid4().hex[:6]
    status, answer = await call(stack, "POST", f"/wait-groups/{group['id']}/instances", {"user_id": user}, key=LIMITED)
    assert (status, answer["error"]["field"]) == (403, "group_id")
    # Nothing was written: the only instance on the worker's topic is the one the full key starts now.
    status, started = await call(stack, "POST", f"/wait-groups/{group['id']}/instances", {}, key=FULL)
    assert status == 201, started
    records = await read_raw_until(
        stack.bootstrap,
        stack.topic("wait_group_events"),
        lambda ms: any(started["wait_group_instance_id"].encode() in m.key for m in ms),
        describe="the full key's instance",
    )
    assert not [m for m in records if user.encode() in m.value]
    assert [m.key for m in records if group["id"].encode() in m.value] == [m.key for m in records[-1:]]
