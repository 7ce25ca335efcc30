"""A subscription's `where` filter over HTTP on the real broker: refused with the field named, applied when read."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from tests.support.stack import Stack, unique

pytestmark = pytest.mark.integration
KEY = "filter_key"


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    stack = Stack.create(kafka_bootstrap, tmp_path_factory.mktemp("filters"), api_keys=f"{KEY}:acme")
    await stack.start_producer()
    yield stack
    stack.stop()


async def call(http: aiohttp.ClientSession, stack: Stack, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, stack.url + path, headers={"X-API-Key": KEY}, **kwargs) as response:
        text = await response.text()
        return response.status, orjson.loads(text) if text else None


async def test_an_invalid_where_is_refused_naming_the_field(stack: Stack, http: aiohttp.ClientSession) -> None:
    where = {"all": [{"field": "data.total", "gte": 1}, {"field": "state.coins", "gt": 1}]}
    body = {"name": unique("bad"), "stream": "events", "topic": "orders", "filter": {"where": where}}
    status, answer = await call(http, stack, "POST", "/subscriptions", json=body)
    assert status == 400, answer
    assert answer["error"]["field"] == "filter.where.all[1].field"
    assert "must be a path starting with type, data, metadata" in answer["error"]["message"]


async def test_only_the_records_the_where_holds_for_are_read(stack: Stack, http: aiohttp.ClientSession) -> None:
    user, name = unique("u"), unique("big-orders")
    where = {"all": [{"field": "data.order.total", "gte": 100}, {"not": {"field": "data.order.test", "eq": True}}]}
    body = {"name": name, "stream": "events", "topic": "orders", "filter": {"users": [user], "where": where}}
    status, created = await call(http, stack, "POST", "/subscriptions", json=body)
    assert status == 201, created
    assert created["filter"]["where"] == where
    wanted = []
    for total, test in [(50, False), (150, False), (100, False), (500, True), (99, False), (120, False)]:
        event = {"data": {"user_id": user, "order": {"total": total, "test": test}}, "metadata": {"type": "order"}}
        status, answer = await call(http, stack, "POST", "/topics/orders/events", json=event)
        assert status == 201, answer
        if total >= 100 and not test:
            wanted.append(answer["id"])
    got: list[str] = []
    after: str | None = None
    deadline = time.monotonic() + 30
    while len(got) < len(wanted):
        assert time.monotonic() < deadline, got
        params = {"after": after} if after else {}
        status, page = await call(http, stack, "GET", f"/subscriptions/{name}/events", params=params)
        assert status == 200, page
        got += [item["record"]["id"] for item in page["events"]]
        after = page["cursor"]
    assert got == wanted
