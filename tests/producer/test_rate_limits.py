"""Rate limits on the real producer: 429 with Retry-After past a key's limit, others unaffected, nothing kept."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from app.core.tenants import hash_key
from tests.support.stack import Stack, read_raw_until, read_until

pytestmark = pytest.mark.integration
SLOW = "rl_slow"  # 5 requests/s
FEW = "rl_few_events"  # 20 events/s
FREE, OTHER = "rl_free", "rl_other"  # no limit of their own; OTHER is another tenant's


@pytest.fixture(scope="module")
async def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Stack]:
    workdir = tmp_path_factory.mktemp("limits")
    keys = workdir / "keys.yaml"
    keys.write_text(
        "keys:\n"
        f"  - {{sha256: {hash_key(SLOW)}, tenant: acme, limits: {{requests_per_s: 5}}}}\n"
        f"  - {{sha256: {hash_key(FEW)}, tenant: acme, limits: {{events_per_s: 20}}}}\n"
        f"  - {{sha256: {hash_key(FREE)}, tenant: acme}}\n"
        f"  - {{sha256: {hash_key(OTHER)}, tenant: globex}}\n"
    )
    stack = Stack.create(kafka_bootstrap, workdir, api_keys="", SLUICE_KEYS_FILE=str(keys))
    await stack.start_producer()
    yield stack
    stack.stop()


def usage_events(count: int) -> list[dict[str, Any]]:
    return [
        {"name": "api_call", "timestamp": "2026-01-01T00:00:00Z", "customerAlias": "c1", "ref": uuid.uuid4().hex}
        for _ in range(count)
    ]


async def put(
    http: aiohttp.ClientSession, stack: Stack, key: str, events: list[dict[str, Any]]
) -> tuple[int, Any, dict[str, str]]:
    async with http.put(stack.url + "/events", json={"events": events}, headers={"X-API-Key": key}) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_requests_past_a_keys_limit_get_429_with_retry_after_and_others_go_on(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        answers = [await put(http, stack, SLOW, usage_events(1)) for _ in range(12)]
        statuses = [status for status, _, _ in answers]
        assert statuses[:5] == [200] * 5  # the burst: a second of the limit
        refused = [(body, headers) for status, body, headers in answers if status == 429]
        assert refused, statuses
        body, headers = refused[0]
        assert (body["error"]["code"], body["error"]["field"]) == ("rate_limited", "requests_per_s")
        assert "5 requests/s" in body["error"]["message"]
        retry_after = int(headers["Retry-After"])
        assert retry_after >= 1
        # Meanwhile another tenant, and another key of the same tenant, are answered as usual.
        assert [(await put(http, stack, OTHER, usage_events(1)))[0] for _ in range(10)] == [200] * 10
        assert (await put(http, stack, FREE, usage_events(1)))[0] == 200
        await asyncio.sleep(retry_after)  # what a client does: wait as long as the answer said
        assert (await put(http, stack, SLOW, usage_events(1)))[0] == 200


async def test_a_batch_past_the_events_limit_is_refused_whole_and_nothing_of_it_kept(stack: Stack) -> None:
    async with aiohttp.ClientSession() as http:
        first, second = usage_events(15), usage_events(15)
        assert (await put(http, stack, FEW, first))[0] == 200
        status, body, headers = await put(http, stack, FEW, second)
        assert (status, body["error"]["field"]) == (429, "events_per_s"), body
        assert "Retry-After" in headers
        # A marker after it on both topics: once it is there, anything of the refused batch would be too.
        marker = usage_events(1)
        assert (await put(http, stack, FREE, marker))[0] == 200
        status, _, _ = await put(http, stack, FREE, [{"name": "bad"}])  # refused for its content: kept
        assert status == 200
    refs = {event["ref"] for event in second}
    written = await read_raw_until(
        stack.bootstrap,
        stack.topic("events.usage"),
        lambda ms: any(marker[0]["ref"].encode() in m.value for m in ms),
        describe="the marker event",
    )
    assert not [m for m in written if any(ref.encode() in m.value for ref in refs)]
    kept = await read_until(
        stack.bootstrap, stack.topic("dlq.acme"), lambda rs: any(b'"bad"' in r["body"] for r in rs), describe="bad"
    )
    assert not [r for r in kept if r["code"] == "rate_limited"]
